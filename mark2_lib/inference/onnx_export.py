"""Export a trained run to ONNX, front end included, checked in ONNX Runtime before it is written.

    export_onnx("runs/student", "student.onnx")

The graph (`onnx_graph.ExportGraph`) is exported with torch.onnx's dynamo exporter, batch size and length
dynamic; the file's inputs, outputs and metadata are described in `onnx_model`. Before anything is
written, the file's bytes are loaded into ONNX Runtime and run on a few seconds of audio beside the
PyTorch model (`load_classifier`); if p_noise differs by more than `tolerance` the export fails and
leaves no file. The file is written atomically. Needs the `onnx` extra (onnx, onnxscript, onnxruntime).
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch

from .. import __version__
from ..atomic import atomic_write
from ..config import CLASSES
from ..run_folders import load_classifier
from .onnx_graph import ExportGraph
from .onnx_model import EXPORT_FORMAT, EXTRA_HINT, INPUT, OUTPUTS, OnnxClassifier, require_onnxruntime

OPSET = 18
TOLERANCE = 1e-4           # largest |p_noise(ONNX Runtime) - p_noise(PyTorch)| the export accepts
CHECK_SECONDS = (0.3, 1.0, 2.3, 3.0)  # the check's waveforms: shorter than, one and several segments


class ExportCheckError(RuntimeError):
    """The exported model, run in ONNX Runtime, disagrees with the PyTorch model: no file is written."""


def require_exporter() -> None:
    """ImportError saying how to install the `onnx` extra when the exporter's packages are missing."""
    require_onnxruntime()
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError(f"ONNX export needs the optional `onnx` extra: {EXTRA_HINT} ({e})") from None


def check_waves(sample_rate: int, batch: int = 2) -> list[torch.Tensor]:
    """The check's audio: a batch of noise at a few lengths, each waveform at its own level (fixed seed)."""
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(batch, int(s * sample_rate), generator=gen) * torch.rand(batch, 1, generator=gen)
            for s in CHECK_SECONDS]


def p_noise_difference(onnx_model: OnnxClassifier, model, waves) -> float:
    """max |p_noise| difference between the ONNX model and the PyTorch model over `waves`."""
    worst = 0.0
    for wave in waves:
        with torch.inference_mode():
            want = torch.softmax(model(wave), dim=-1)[:, 1]
        got = torch.softmax(torch.from_numpy(onnx_model(wave.numpy())[0]), dim=-1)[:, 1]
        worst = max(worst, float((got - want).abs().max()))
    return worst


def onnx_bytes(model, run_config: str) -> bytes:
    """The fused WaveformClassifier `model` as a serialized ONNX model with mark2's metadata."""
    graph = ExportGraph(model).eval()
    example = torch.zeros(2, 3 * model.audio.segment_samples)
    batch, samples = torch.export.Dim("batch", min=1), torch.export.Dim("samples", min=1)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed" and other notes of the exporter
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, (example,), dynamo=True, dynamic_shapes=({0: batch, 1: samples},),
                                        input_names=[INPUT], output_names=list(OUTPUTS), opset_version=OPSET,
                                        verbose=False)
    finally:
        quiet.setLevel(level)
    proto = program.model_proto
    meta = {"sample_rate": str(model.sample_rate), "classes": json.dumps(list(CLASSES)), "mark2_version": __version__,
            "mark2_export": EXPORT_FORMAT, "mark2_config": run_config}
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name, proto.doc_string = "mark2", (
        f"mark2 noise/clean classifier: {INPUT} [B, samples] float32 at {model.sample_rate} Hz -> logits [B, 2] "
        f"(index 1 = noise), segment_logits [B, S, 2], segment_scores [B, S]")
    return proto.SerializeToString()


def export_onnx(run_dir, out_path, tolerance: float = TOLERANCE) -> Path:
    """Export the run in `run_dir` to the ONNX file `out_path`, after checking it in ONNX Runtime; returns the path.

    ExportCheckError (and no file) when ONNX Runtime's p_noise differs from PyTorch's by more than
    `tolerance` on the check's audio; FileNotFoundError / ValueError for a bad run folder; ImportError
    without the `onnx` extra."""
    require_exporter()
    run_dir, out_path = Path(run_dir), Path(out_path)
    model = load_classifier(run_dir)
    data = onnx_bytes(model, (run_dir / "config.json").read_text())
    diff = p_noise_difference(OnnxClassifier(out_path, model_bytes=data), model, check_waves(model.sample_rate))
    if not diff <= tolerance:
        raise ExportCheckError(f"{out_path}: not written: in ONNX Runtime the exported model's p_noise differs "
                               f"from the PyTorch model's by {diff:.3g} (> {tolerance:g}) on the check's audio")
    return atomic_write(out_path, lambda f: f.write(data))
