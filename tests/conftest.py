"""Shared fixtures. Every test runs torch on TORCH_THREADS threads, so timings and bit-exact
comparisons (also against subprocesses, which set the same count) are reproducible."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")  # plots are written headless

import pytest  # noqa: E402
import torch  # noqa: E402

TORCH_THREADS = 1
torch.set_num_threads(TORCH_THREADS)

CI_VALUES = ("1", "true", "yes")  # what $CI may say to mean "this is CI" (.ci/run exports CI=true)


def in_ci() -> bool:
    """Whether the tests run under CI ($CI is 1, true or yes, any case)."""
    return os.environ.get("CI", "").strip().lower() in CI_VALUES


def require_or_skip(missing: str, what: str = "this test") -> None:
    """A test's prerequisite is `missing` (why, and how to get it): fail under CI, which must run
    every test, and skip elsewhere. Call it from a test or fixture (`from conftest import ...`)."""
    if in_ci():
        pytest.fail(f"{what} cannot run in CI: {missing}", pytrace=False)
    pytest.skip(missing)


def dnsmos_missing() -> str | None:
    """None when the `dnsmos` extra imports (onnxruntime, speechmos), else what failed and how to install it."""
    from mark2_lib import dnsmos

    try:
        dnsmos.require_dnsmos()
    except ImportError as e:
        return f"{e}; or run 'make setup-dnsmos'"
    return None


def onnx_missing() -> str | None:
    """None when the `onnx` extra imports (onnx, onnxscript, onnxruntime), else what failed and how to install it."""
    from mark2_lib.inference.onnx_export import require_exporter

    try:
        require_exporter()
    except ImportError as e:
        return f"{e}; or run 'make setup-onnx'"
    return None


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """(manifest, features, audio_cfg) for 48 synthetic 2 s clips (3 segments each), features cached.

    The data folder is `manifest.root`; the feature cache is `manifest.root.parent / "cache"`.
    """
    from mark2_lib.builders import synth
    from mark2_lib.config import AudioConfig
    from mark2_lib.data import FeatureCache, load_labels

    root = tmp_path_factory.mktemp("tiny_data")
    # 70/15/15 rather than the default data's 50/10/40: with 48 clips the tiny runs need the train clips
    data_dir = synth.make_default_dataset(root / "data", n_clips=48, seed=7, progress=False,
                                          splits=(("val", 0.15), ("test", 0.15)))
    audio_cfg = AudioConfig()
    manifest = load_labels(data_dir / "labels.csv", sample_rate=audio_cfg.sample_rate)
    features = FeatureCache(root / "cache", audio_cfg).features(manifest, progress=False)
    return manifest, features, audio_cfg
