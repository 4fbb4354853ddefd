"""Notebook 04's alpha/T sliders, driven the way a user meets them: JupyterLab in headless Chromium.

A tiny dataset (48 clips, soft labels from the simulated annotator's P(noise)) and a 2 x 2 sweep of
2-epoch runs go into a temporary root; papermill only injects the parameters; JupyterLab runs every
cell; the test moves each slider with the keyboard and checks that the figure and the metrics table
switch to the run of the new alpha/T. Screenshots go to runs/test-artifacts/browser/ (or
$MARK2_BROWSER_ARTIFACTS).
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import require_or_skip
from lab_server import CHROMIUM_ARGS, LabServer, chromium_path

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # about 1.5 min: out of `make test-fast`
ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "04_explore_alpha_T.ipynb"
ALPHAS, TEMPERATURES = [0.0, 0.7], [1.0, 4.0]
RUN_ALL_TIMEOUT_MS = 240_000  # imports, features of 48 clips, 3 tiny trainings: about 1 min on 2 busy cores
REDRAW_TIMEOUT_MS = 30_000


ARTIFACTS = ("before.png", "after_alpha.png", "after.png", "failed.png", "jupyter-lab.log")


def artifacts_dir() -> Path:
    """Where screenshots and the server log go, emptied of an earlier run's (they must never pass for this one's)."""
    d = Path(os.environ.get("MARK2_BROWSER_ARTIFACTS") or ROOT / "runs" / "test-artifacts" / "browser")
    d.mkdir(parents=True, exist_ok=True)
    for name in ARTIFACTS:
        (d / name).unlink(missing_ok=True)
    return d


def require_browser():
    """Chromium and Playwright, or a clear failure under CI (which must run this test) and a skip elsewhere."""
    exe = chromium_path()
    missing = None
    if not exe.exists():
        missing = f"no Chromium at {exe}: run 'make test-browser' (installs it with apt-get as root) or set CHROMIUM"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "playwright is not installed: run 'make setup' (pip install -e .[dev])"
    if missing:
        require_or_skip(missing, "browser test")
    return exe


def make_workspace(root: Path) -> Path:
    """Tiny data with soft labels plus notebook 04 with small parameters injected (not executed)."""
    import papermill as pm

    from mark2_lib.builders import synth
    from mark2_lib.data import write_soft_labels

    data = synth.make_default_dataset(root / "data", n_clips=48, seed=7, progress=False)
    truth = pd.read_csv(data / "truth.csv")
    # The simulated annotator's noise-free P(noise) stands in for a teacher: a real soft label per clip.
    write_soft_labels(data / "soft_labels.csv", truth["clip_id"], truth["p_noise_annotator"], teacher="annotator")
    lab = root / "lab"
    lab.mkdir()
    params = {"alphas": ALPHAS, "temperatures": TEMPERATURES, "epochs": 2, "patience": 2, "batch_size": 16,
              "data_dir": str(data), "cache_dir": str(root / "cache"), "sweep_name": str(root / "runs" / "sweep"),
              "interactive": True, "default_alpha": ALPHAS[0], "default_temperature": TEMPERATURES[0],
              "progress": False}
    pm.execute_notebook(str(ROOT / "notebooks" / NOTEBOOK), str(lab / NOTEBOOK), parameters=params,
                        prepare_only=True, kernel_name="python3", progress_bar=False)
    return lab


def slider(page, name: str):
    """The handle of the SelectionSlider whose description is `name` (keyboard-focusable, role=slider)."""
    box = page.locator(".widget-hslider").filter(has=page.locator(".widget-label", has_text=re.compile(f"^{name}$")))
    return box, box.locator(".noUi-handle")


def shown(output, timeout_ms: float = 60_000) -> tuple[str, str]:
    """(figure PNG data URL, metrics table text) currently in the sliders' output area."""
    return (output.locator("img").first.get_attribute("src", timeout=timeout_ms),
            output.locator("table").first.inner_text(timeout=timeout_ms))


def move(page, name: str, key: str, expect_value: str, output, before: tuple[str, str]):
    """Focus a slider's handle, press `key`, and wait until its readout and the output area changed."""
    from playwright.sync_api import Error as PlaywrightError

    box, handle = slider(page, name)
    handle.focus()
    page.keyboard.press(key)
    box.locator(".widget-readout").filter(has_text=re.compile(f"^{re.escape(expect_value)}$")).wait_for(
        timeout=REDRAW_TIMEOUT_MS)
    deadline = time.monotonic() + REDRAW_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        try:
            now = shown(output, timeout_ms=2_000)
        except PlaywrightError:  # the output area is being redrawn (cleared, then filled)
            now = None
        if now is not None and now[0] and now != before and now[0] != before[0] and now[1] != before[1]:
            return now
        page.wait_for_timeout(200)
    raise AssertionError(f"moving {name} to {expect_value} did not redraw both the figure and the metrics")


def wait_for_sliders(page, out_dir: Path):
    """Wait until Run All shows both sliders; fail at once, with the traceback, if a cell raises."""
    alpha, t = slider(page, "alpha")[1], slider(page, "T")[1]
    traceback = page.locator(".jp-OutputArea-output").filter(has_text="Traceback (most recent call last)")
    deadline = time.monotonic() + RUN_ALL_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        if alpha.count() and t.count():
            return
        if traceback.count():
            page.screenshot(path=str(out_dir / "failed.png"), full_page=True)
            raise AssertionError(f"a cell raised under Run All:\n{traceback.first.inner_text()[-3000:]}")
        page.wait_for_timeout(500)
    page.screenshot(path=str(out_dir / "failed.png"), full_page=True)
    raise AssertionError(f"no alpha and T sliders {RUN_ALL_TIMEOUT_MS / 1000:.0f} s after Run All; "
                         f"screenshot {out_dir / 'failed.png'}")


def test_sliders_redraw_the_run_of_the_new_alpha_and_T(tmp_path):
    exe = require_browser()
    from playwright.sync_api import sync_playwright

    out_dir = artifacts_dir()
    t0 = time.monotonic()
    lab = make_workspace(tmp_path)
    timings = {"tiny data + parameters": time.monotonic() - t0}
    t0 = time.monotonic()
    with LabServer(lab, out_dir / "jupyter-lab.log") as server, sync_playwright() as pw:
        timings["server start"] = time.monotonic() - t0
        t0 = time.monotonic()
        browser = pw.chromium.launch(executable_path=str(exe), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1100})
            page.set_default_timeout(60_000)
            page.goto(f"{server.url}/lab/tree/{NOTEBOOK}?reset")
            page.locator(".jp-Notebook").first.wait_for()
            # The status bar names the kernel once it is connected and idle: only then can cells run.
            page.locator("#jp-main-statusbar").get_by_text(re.compile(r"Python 3.*\| Idle")).wait_for()

            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

            wait_for_sliders(page, out_dir)
            output = page.locator(".widget-output").last
            output.locator("img").first.wait_for()
            output.locator("table").first.wait_for()
            # What a user sees of the explorer: the sliders, the figure and the metrics table.
            explorer = page.locator(".jp-Cell-outputWrapper").filter(has=page.locator(".widget-hslider")).last
            timings["run all"] = time.monotonic() - t0

            before = shown(output)
            assert "alpha=0, T=1" in before[1], before[1]
            explorer.screenshot(path=str(out_dir / "before.png"))

            t0 = time.monotonic()
            mid = move(page, "alpha", "ArrowRight", "0.7", output, before)
            assert "alpha=0.7, T=1" in mid[1], mid[1]
            explorer.screenshot(path=str(out_dir / "after_alpha.png"))

            after = move(page, "T", "ArrowRight", "4.0", output, mid)
            assert "alpha=0.7, T=4" in after[1], after[1]
            explorer.screenshot(path=str(out_dir / "after.png"))
            timings["two slider moves"] = time.monotonic() - t0

            assert len({before[0], mid[0], after[0]}) == 3, "the three slider positions showed the same figure"
        finally:
            browser.close()
    assert server.proc is None
    print(f"\nbrowser test screenshots: {out_dir}; " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
