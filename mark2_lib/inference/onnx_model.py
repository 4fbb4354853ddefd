"""A classifier exported to ONNX (`mark2 export RUN --format onnx`), run in ONNX Runtime.

The file holds the whole classifier (`onnx_graph.ExportGraph`): input "waveform" `[B, samples]`
float32 at the run's sample rate; outputs "logits" (clip logits `[B, 2]`, index 1 = noise),
"segment_logits" `[B, S, 2]` and "segment_scores" `[B, S]` (attention-pooling scores; zeros for
mean and max pooling). Its metadata_props say what it is: sample_rate, classes (JSON), mark2_version,
mark2_export (the layout's version) and mark2_config (the run's config.json).

`OnnxClassifier.stream_file` scores a file of any length in bounded memory: the file is read block by
block (`stream.stream_samples`) and the graph is run on chunks of whole segments, each with the segment
before it, whose output is dropped, so that every kept segment's frames see the samples they see in the
whole clip; at the clip's end the graph pads the last chunk as it pads a whole clip. Segment logits
are then pooled as the model pools them. A model with a clip context (`ModelConfig.clip_context`) judges
each segment beside statistics of the whole file, so it gets the whole file in one graph run: read block
by block, then scored (memory grows with the file: about 0.8 GB more for one hour at 16 kHz).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..audio import n_segments
from ..config import AudioConfig, ModelConfig
from ..errors import DataError
from .stream import BLOCK_FRAMES, stream_samples

EXTRA_HINT = "pip install -e '.[onnx]' or make setup-onnx"
EXPORT_FORMAT = "1"  # metadata "mark2_export": bump when the graph's inputs or outputs change
INPUT = "waveform"
OUTPUTS = ("logits", "segment_logits", "segment_scores")
ONNX_SUFFIX = ".onnx"


def require_onnxruntime():
    """The onnxruntime module, or ImportError saying how to install the `onnx` extra."""
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(f"ONNX models need the optional `onnx` extra: {EXTRA_HINT} ({e})") from None
    return onnxruntime


def is_onnx_file(path) -> bool:
    """Whether `path` names an ONNX file (by its extension), which predict reads instead of a run folder."""
    return isinstance(path, (str, Path)) and Path(path).suffix.lower() == ONNX_SUFFIX


class OnnxClassifier:
    """A mark2 ONNX export loaded into ONNX Runtime (CPU): `audio`, `sample_rate`, `classes`, `version`,
    `pooling`, `clip_context`; called on a waveform batch it returns the graph's three outputs as numpy arrays."""

    def __init__(self, path, threads: int | None = None, model_bytes: bytes | None = None):
        """Load `path` (or `model_bytes`, then `path` only names it in messages). DataError naming the file
        when it is not an ONNX model, or not a mark2 classifier export; `threads`: intra-op threads
        (default: torch's current count, so a worker limited to one thread stays at one)."""
        ort = require_onnxruntime()
        self.path = str(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            source = model_bytes if model_bytes is not None else str(path)
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail / InvalidProtobuf / NoSuchFile
            raise DataError(f"{path}: not a loadable ONNX model ({str(e).strip().splitlines()[0]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("mark2_export") != EXPORT_FORMAT:
            found = f"mark2_export={meta['mark2_export']!r}" if "mark2_export" in meta else "no mark2 metadata"
            raise DataError(f"{path}: not a mark2 classifier export ({found}; expected mark2_export="
                            f"{EXPORT_FORMAT!r}); write one with `mark2 export RUN_DIR --format onnx`")
        names = ([i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()])
        if names != ([INPUT], list(OUTPUTS)):
            raise DataError(f"{path}: inputs {names[0]} and outputs {names[1]}, expected [{INPUT!r}] and {list(OUTPUTS)}")
        try:
            config = json.loads(meta["mark2_config"])
            self.audio = AudioConfig.from_dict(config["audio"])
            model_cfg = ModelConfig.from_dict(config["model"])
            self.pooling, self.clip_context = model_cfg.pooling, model_cfg.clip_context
            self.sample_rate, self.classes = int(meta["sample_rate"]), tuple(json.loads(meta["classes"]))
            self.version = meta["mark2_version"]
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}: broken mark2 metadata ({type(e).__name__}: {e})") from None
        if self.sample_rate != self.audio.sample_rate:
            raise DataError(f"{path}: metadata sample_rate={self.sample_rate} but its config says "
                            f"{self.audio.sample_rate}")

    def __call__(self, wave) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Waveforms `[B, samples]` -> (clip logits `[B, 2]`, segment logits `[B, S, 2]`, segment scores `[B, S]`)."""
        wave = np.ascontiguousarray(np.asarray(wave, dtype=np.float32))
        return tuple(self.session.run(list(OUTPUTS), {INPUT: wave}))

    def pool(self, seg_logits: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """One clip's segment logits `[S, C]` (and attention scores `[S]`) -> its clip logits `[C]`, as the graph
        (and `ClipClassifier.pool`) pools them."""
        if self.pooling == "attention":
            return (torch.softmax(scores, dim=0).unsqueeze(-1) * seg_logits).sum(dim=0)
        return seg_logits.amax(dim=0) if self.pooling == "max" else seg_logits.mean(dim=0)

    def stream_file(self, path, batch_size: int = 64, block_frames: int = BLOCK_FRAMES,
                    on_block=None, on_samples=None) -> tuple[np.ndarray, np.ndarray, int]:
        """One file's (segment logits `[S, 2]`, segment scores `[S]`, length in samples at the run's rate), read
        block by block and scored `batch_size` segments per graph run (plus the one before them, dropped); with a
        clip context, the whole file in one run. DataError naming the file when it cannot be read (as
        `stream.stream_samples`)."""
        cfg = self.audio
        if self.clip_context != "none":
            return self.whole_file(path, block_frames, on_block, on_samples)
        win, hop = cfg.segment_samples, cfg.hop_samples
        if cfg.context > hop:
            raise ValueError(f"{self.path}: n_fft // 2 = {cfg.context} exceeds the segment hop {hop}: "
                             f"a chunk's first segment would not cover the next one's left context")
        buf, start, done = np.zeros(0, np.float32), 0, 0  # buf holds the clip from sample `start`; `done` segments scored
        logits, scores = [], []

        def run(chunk: np.ndarray, lo: int, end: int) -> None:
            """Score the chunk starting at segment `lo`; keep segments `done` .. `end` - 1."""
            _, seg, sc = self(chunk[None])
            logits.append(seg[0, done - lo:end - lo])
            scores.append(sc[0, done - lo:end - lo])

        samples = stream_samples(path, cfg, block_frames, on_block, on_samples)
        while True:
            try:
                block = next(samples)
            except StopIteration as stop:
                n = stop.value
                break
            buf = np.concatenate([buf, block])
            while (end := min((start + len(buf) - win) // hop, done + batch_size)) > done:
                lo = max(done - 1, 0)  # segment `end`, dropped too, gives segment end - 1 its right context
                run(buf[lo * hop - start:end * hop + win - start], lo, end)
                done, new_start = end, max(end - 1, 0) * hop
                buf, start = buf[new_start - start:], new_start
        total = n_segments(n, cfg)
        while done < total:  # the clip's end: the graph zero-pads the last chunk as it pads the whole clip
            lo, end = max(done - 1, 0), min(done + batch_size, total)
            chunk = buf[lo * hop - start:]
            if end < total:  # not the last chunk: cut after segment `end`, zero-padded as the whole clip is
                chunk = np.pad(chunk, (0, max(end * hop + win - n, 0)))[:(end - lo) * hop + win]
            run(chunk, lo, end)
            done = end
        return np.concatenate(logits), np.concatenate(scores), n

    def whole_file(self, path, block_frames: int = BLOCK_FRAMES, on_block=None, on_samples=None
                   ) -> tuple[np.ndarray, np.ndarray, int]:
        """`stream_file` for a clip-context model: the file read block by block, then scored in one graph run."""
        samples = stream_samples(path, self.audio, block_frames, on_block, on_samples)
        blocks = []
        while True:
            try:
                blocks.append(next(samples))
            except StopIteration as stop:
                n = stop.value
                break
        _, seg, scores = self(np.concatenate(blocks or [np.zeros(0, np.float32)])[None])
        return seg[0], scores[0], n
