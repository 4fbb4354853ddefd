"""Export a trained run for use outside this library: TorchScript with its front end inside."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..atomic import atomic_write
from ..run_folders import load_classifier


def export_torchscript(run_dir, out_path) -> Path:
    """Script a run's fused WaveformClassifier (front end included; `load_classifier`) and save it atomically.

    The module takes a waveform batch `[B, samples]` at `module.sample_rate` Hz and returns
    clip logits `[B, 2]` (index 1 = noise); `segment_and_clip_logits` also gives segment logits.
    The run's config.json travels inside the file as the extra file "config.json". Returns `out_path`.
    """
    run_dir = Path(run_dir)
    model = load_classifier(run_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation notice
        scripted = torch.jit.script(model)
    wave = torch.randn(2, int(model.sample_rate * 2.3), generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        diff = (scripted(wave) - model(wave)).abs().max().item()
    if not diff <= 1e-5:
        raise RuntimeError(f"the scripted model differs from the eager one by {diff:g} on a test waveform")
    extra = {"config.json": (run_dir / "config.json").read_text()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return atomic_write(out_path, lambda f: torch.jit.save(scripted, f, _extra_files=extra))
