"""Export a trained run for use outside this library, front end inside: TorchScript (`export_torchscript`)
or ONNX (`onnx_export.export_onnx`); `export_run` picks by `fmt` or by the output's extension."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..atomic import atomic_write
from ..run_folders import load_classifier

FORMATS = {"torchscript": (".ts", ".pt"), "onnx": (".onnx",)}  # format -> the extensions that name it


def export_format(out_path, fmt: str | None = None) -> str:
    """The format to write `out_path` in: `fmt`, or the one its extension names (.onnx; .ts or .pt).
    ValueError when neither says, or when they disagree."""
    suffix = Path(out_path).suffix.lower()
    named = next((f for f, suffixes in FORMATS.items() if suffix in suffixes), None)
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {sorted(FORMATS)}")
    if fmt is None and named is None:
        raise ValueError(f"{out_path}: cannot tell the format from the extension {suffix or '(none)'}: name the file "
                         f".onnx, .ts or .pt, or give the format (onnx or torchscript)")
    if fmt is not None and named is not None and fmt != named:
        raise ValueError(f"{out_path}: the extension {suffix} means {named}, but the format asked for is {fmt}")
    return fmt or named


def export_run(run_dir, out_path, fmt: str | None = None) -> Path:
    """Export the run to `out_path` as TorchScript or ONNX (`export_format`); returns the path."""
    if export_format(out_path, fmt) == "onnx":
        from .onnx_export import export_onnx

        return export_onnx(run_dir, out_path)
    return export_torchscript(run_dir, out_path)


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
