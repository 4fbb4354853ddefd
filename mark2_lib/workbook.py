"""Run the numbered notebooks headlessly with papermill, in order, timing each one."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .paths import repo_root

KERNEL = "python3"


def _kernel_uses_this_python() -> None:
    """The python3 kernelspec runs `python` from PATH: make that this interpreter (the project's venv)."""
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def numbered_notebooks(folder=None) -> list[Path]:
    """`notebooks/NN_*.ipynb` in order."""
    folder = Path(folder) if folder else repo_root() / "notebooks"
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def run_notebook(path, out_path, parameters: dict | None = None, timeout: int = 900, cwd=None) -> float:
    """Execute one notebook into `out_path`; raises papermill's PapermillExecutionError on failure."""
    import papermill as pm

    _kernel_uses_this_python()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # The kernel inherits this environment: a headless MPLBACKEND (Agg, as `make` and test runners
    # set) would stop it drawing figures into the executed notebook, so the kernel starts without it.
    backend = os.environ.pop("MPLBACKEND", None)
    try:
        pm.execute_notebook(
            str(path), str(out_path), parameters=parameters or {}, kernel_name=KERNEL,
            execution_timeout=timeout, cwd=str(cwd) if cwd else None, progress_bar=False,
        )
    finally:
        if backend is not None:
            os.environ["MPLBACKEND"] = backend
    return time.perf_counter() - t0


def declared_parameters(path) -> set[str]:
    """Names in a notebook's `parameters` cell."""
    import papermill as pm

    return set(pm.inspect_notebook(str(path)))


def selected_notebooks(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks, or those whose name starts with an entry of `only`."""
    return [nb for nb in numbered_notebooks() if not only or any(nb.name.startswith(o) for o in only)]


class UndeclaredParameterError(ValueError):
    """A parameter meant for the workbook that none of the notebooks to run declares."""


def check_common_parameters(common: dict | None, notebooks: list[Path]) -> dict[Path, set[str]]:
    """Each notebook's declared parameters; UndeclaredParameterError naming any `common` parameter that
    none of `notebooks` declares (a typo would otherwise be dropped without a word)."""
    declared = {nb: declared_parameters(nb) for nb in notebooks}
    known = set().union(*declared.values())
    unknown = sorted(set(common or {}) - known)
    if unknown:
        raise UndeclaredParameterError(f"parameter(s) {', '.join(unknown)}: declared by none of "
                         f"{', '.join(nb.name for nb in notebooks) or 'the notebooks'}; they declare: "
                         f"{', '.join(sorted(known))}")
    return declared


def run_all(out_dir=None, parameters: dict[str, dict] | None = None, timeout: int = 900,
            only: list[str] | None = None, common: dict | None = None) -> list[tuple[str, float]]:
    """Run every numbered notebook (or those whose name starts with an entry of `only`).

    `parameters` maps a notebook's stem to its parameters; `common` parameters go to every notebook
    that declares them (e.g. data_dir), so one set of options can steer the whole workbook. A common
    parameter that none of the notebooks to run declares (a typo) raises UndeclaredParameterError before any runs.
    """
    out_dir = Path(out_dir) if out_dir else repo_root() / "runs" / "executed"
    parameters = parameters or {}
    notebooks = selected_notebooks(only)
    declared = check_common_parameters(common, notebooks)
    times = []
    for nb in notebooks:
        params = {k: v for k, v in (common or {}).items() if k in declared[nb]}
        params.update(parameters.get(nb.stem, {}))
        print(f"==> {nb.name} -> {out_dir / nb.name}" + (f" {params}" if common else ""), flush=True)
        seconds = run_notebook(nb, out_dir / nb.name, params, timeout, cwd=nb.parent)
        times.append((nb.name, seconds))
        print(f"    done in {seconds:.1f} s", flush=True)
    total = sum(s for _, s in times)
    print("\nnotebook                          seconds")
    for name, s in times:
        print(f"{name:<32} {s:8.1f}")
    print(f"{'total':<32} {total:8.1f}")
    return times
