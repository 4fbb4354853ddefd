"""Prediction on new audio files and folders, streamed in bounded memory, with a trained run.

    clips, segments = predict_paths("runs/student", ["recordings/"], segments=True)
    write_predictions(clips, "predictions.csv", segments)

Every file is streamed (stream.py): read block by block (`block_frames` at a time), mixed to mono,
resampled to the run's rate exactly as `audio.resample` would, and cut into the same windows as
`audio.segment_waveform` (with clip framing, each widened by the STFT context the clip's frames
see, `audio.stream_windows_of`). The windows of each block arrive as one stretch of audio, framed once
(`LogMel.stretch`); segments from all files share batches through the model's segment path, and
each file's segment logits are then pooled with the model's own pooling. For a file at the run's
sample rate the result equals `load_classifier(run)(load_audio(path)[None])` up to float rounding.
A model with a clip context (`ModelConfig.clip_context`) runs its encoder in those batches and its head
on each file once the file has ended, so it holds a file's segment features until then (about 10 KB
per second of audio for the student); through ONNX Runtime, such a model reads each whole file in one graph run
(`OnnxClassifier.whole_file`).
"""
from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..atomic import atomic_write
from ..audio import segment_times
from ..config import MIN_SECONDS, SILENCE_DBFS, AudioConfig
from ..errors import DataError
from ..context import clip_context
from ..models import ClipClassifier, WaveformClassifier
from ..run_folders import load_classifier
from .files import find_audio
from .onnx_model import OnnxClassifier, is_onnx_file
from .stream import BLOCK_FRAMES, stream_stretches

CLIP_COLUMNS = ["path", "p_noise", "label", "n_segments", "error"]
SEGMENT_COLUMNS = ["path", "segment", "start_s", "end_s", "p_noise", "label"]
SILENT = "silent"  # the label of a file (and its segments) with nothing audible in it: no p_noise

# ----------------------------------------------------------------------------- prediction


@dataclass
class _Clip:
    """One file's progress: segment results as they come back from the model."""

    path: Path
    logits: list = field(default_factory=list)
    emb: list = field(default_factory=list)
    features: list = field(default_factory=list)  # a clip-context model's segment features, until the file ends
    n_samples: int = 0
    error: str = ""
    peak: float = 0.0     # largest |sample| of the mono mix at the run's rate
    silent: bool = False  # the peak stayed below the silence level: no p_noise


def _as_model(run_dir_or_model) -> WaveformClassifier | OnnxClassifier:
    """A fused model from a run folder, or from a WaveformClassifier (an unfused one is copied, not changed);
    an `.onnx` file (`mark2 export --format onnx`) or an OnnxClassifier runs in ONNX Runtime."""
    if isinstance(run_dir_or_model, OnnxClassifier):
        return run_dir_or_model
    if is_onnx_file(run_dir_or_model):
        if not Path(run_dir_or_model).is_file():
            raise FileNotFoundError(f"{run_dir_or_model}: ONNX file not found")
        return OnnxClassifier(run_dir_or_model)
    if isinstance(run_dir_or_model, WaveformClassifier):
        model = run_dir_or_model
        return model if model.model.encoder.fused else copy.deepcopy(model).fuse()
    if isinstance(run_dir_or_model, (str, Path)):
        return load_classifier(run_dir_or_model)
    raise TypeError(f"expected a run folder or a WaveformClassifier, got {type(run_dir_or_model).__name__}")


def predict_paths(run_dir_or_model, paths, batch_size: int = 64, segments: bool = False,
                  progress: bool = True, threshold: float = 0.5, block_frames: int = BLOCK_FRAMES,
                  min_seconds: float = MIN_SECONDS,
                  silence_dbfs: float | None = SILENCE_DBFS) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Score audio files and folders (recursed) with a trained run, a WaveformClassifier or an ONNX export (see
    `_as_model`; an ONNX model runs each file's segments `batch_size` at a time, `OnnxClassifier.stream_file`).

    Returns (clips, segments): clips has one row per file with columns path, p_noise, label
    ("clean" | "noise" at `threshold`, or "silent"), n_segments and error (empty when the file was scored;
    otherwise the message, with p_noise/label/n_segments empty). With `segments=True` the second
    frame has one row per segment: path, segment (0-based), start_s, end_s (clipped to the
    file's length, as `audio.segment_times`), p_noise, label; else it is None.
    `batch_size` counts segments per forward pass (windows from different files share batches).
    What is not judged (config.py): a file shorter than `min_seconds` at the run's rate gets an error row
    ("too short to judge"); a file whose peak stays below `silence_dbfs` dB full scale is scored but
    labelled "silent", its p_noise (and its segments') left empty. `silence_dbfs=None` turns that off.
    """
    if batch_size < 1 or block_frames < 1:
        raise ValueError(f"batch_size={batch_size} and block_frames={block_frames} must be >= 1")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold} must be in [0, 1]")
    if not 0.0 <= min_seconds < float("inf"):
        raise ValueError(f"min_seconds={min_seconds} must be a finite number >= 0")
    if silence_dbfs is not None and not -200.0 <= silence_dbfs <= 0.0:
        raise ValueError(f"silence_dbfs={silence_dbfs} must be in [-200, 0] dB full scale, or None")
    silence = None if silence_dbfs is None else 10.0 ** (silence_dbfs / 20.0)
    model = _as_model(run_dir_or_model)
    cfg = model.audio
    onnx = isinstance(model, OnnxClassifier)
    context = not onnx and model.model.clip_context != "none"  # the head waits for the whole file (`_clip_head`)
    attention = not onnx and model.model.pooling == "attention" and model.model.head.attention is not None
    entries, n_ignored = find_audio(paths)
    clips = [_Clip(p, error=msg) for p, msg in entries]

    pending: list[tuple[_Clip, torch.Tensor]] = []  # segment features waiting for the model, in order
    n_pending = [0]
    waiting: list[_Clip] = []  # clip-context files read to their end whose head has not run yet, in order

    def run_heads():
        """The head of each waiting file none of whose segments is pending any more (`pending` is in file
        order, so those are the files before the first pending segment's); its features are then freed."""
        first = pending[0][0] if pending else None
        while waiting and waiting[0] is not first:
            clip = waiting.pop(0)
            if clip.error:
                clip.features, clip.emb = [], []
            else:
                _clip_head(model.model, clip)

    def flush(n: int):
        """Run the model on the first `n` pending segments (a stretch may be split between two passes)."""
        take, got = [], 0
        while pending and got < n:
            clip, f = pending[0]
            k = min(len(f), n - got)
            take.append((clip, f[:k]))
            pending[0:1] = [(clip, f[k:])] if k < len(f) else []
            got += k
        n_pending[0] -= got
        if not take:
            return
        x = torch.cat([f for _, f in take])
        if context:  # the encoder only: the head reads the whole file's context once the file has ended
            emb = model.model.flatten(model.model.encoder(x))
        else:
            logits, emb = model.model.segment_forward(x)
        i = 0
        for clip, f in take:
            if not clip.error and context:
                clip.features.append(f)
                clip.emb.extend(emb[i:i + len(f)])
            elif not clip.error:
                clip.logits.extend(logits[i:i + len(f)])
                if attention:
                    clip.emb.extend(emb[i:i + len(f)])
            i += len(f)
        run_heads()

    bar = tqdm(total=len(clips), desc="predict", unit="file", disable=not progress, file=sys.stderr)
    seconds, last_refresh = [0.0], [0.0]

    def on_block(s):
        seconds[0] += s
        if time.monotonic() - last_refresh[0] > 0.5:
            bar.set_postfix_str(f"{tqdm.format_interval(seconds[0])} of audio")
            last_refresh[0] = time.monotonic()

    try:
        with torch.inference_mode():
            for clip in clips:
                def on_samples(x, clip=clip):
                    if len(x):
                        clip.peak = max(clip.peak, float(np.abs(x).max()))

                if not clip.error and onnx:
                    try:
                        seg, scores, clip.n_samples = model.stream_file(clip.path, batch_size, block_frames, on_block,
                                                                        on_samples)
                        clip.logits, clip.emb = list(torch.from_numpy(seg)), list(torch.from_numpy(scores))
                    except DataError as e:
                        clip.error = str(e)
                elif not clip.error:
                    stretches = stream_stretches(clip.path, cfg, block_frames, on_block, on_samples)
                    try:
                        while True:
                            features = model.logmel.stretch(torch.from_numpy(next(stretches)))
                            pending.append((clip, features))
                            n_pending[0] += len(features)
                            while n_pending[0] >= batch_size:
                                flush(batch_size)
                    except StopIteration as stop:
                        clip.n_samples = stop.value
                    except DataError as e:
                        clip.error = str(e)
                        clip.logits, clip.emb = [], []
                if not clip.error:
                    _judge(clip, cfg.sample_rate, min_seconds, silence)
                if context:
                    waiting.append(clip)
                    run_heads()
                bar.update(1)
            flush(n_pending[0])
            run_heads()
            clip_rows, seg_rows = [], []
            for clip in clips:
                clip_rows.append(_clip_row(model, clip, attention, threshold))
                if segments and not clip.error:
                    seg_rows += _segment_rows(clip, cfg, threshold)
    finally:
        bar.close()
    clip_df = pd.DataFrame(clip_rows, columns=CLIP_COLUMNS).astype({"n_segments": "Int64"})
    clip_df.attrs["n_ignored"] = n_ignored  # non-audio files inside folders, for the summary
    seg_df = pd.DataFrame(seg_rows, columns=SEGMENT_COLUMNS) if segments else None
    return clip_df, seg_df


def _clip_head(model: ClipClassifier, clip: _Clip) -> None:
    """A clip-context model's head on one whole file: each segment's embedding joined to the file's context,
    computed from all its segments' features (held until the file ends: about 10 KB per second of audio)."""
    context = clip_context(model.clip_context, torch.cat(clip.features)[None])   # [1, K]
    emb = model.head.join(torch.stack(clip.emb), context.expand(len(clip.emb), context.shape[1]))
    clip.logits, clip.emb, clip.features = list(model.head(emb)), list(emb), []


def _judge(clip: _Clip, sample_rate: int, min_seconds: float, silence: float | None) -> None:
    """Mark a file that streamed without error as too short (an error) or silent (see predict_paths)."""
    if clip.n_samples < min_seconds * sample_rate:
        clip.error = (f"{clip.path}: too short to judge: {clip.n_samples / sample_rate:.3f} s of audio, under the "
                      f"minimum of {min_seconds:g} s (min_seconds, predict --min-seconds)")
        clip.logits, clip.emb = [], []
    elif silence is not None and clip.peak < silence:
        clip.silent = True


def _clip_row(model: WaveformClassifier | OnnxClassifier, clip: _Clip, attention: bool, threshold: float) -> list:
    """One file's row of the clip table: its segment logits pooled by the model's own pooling, or its error."""
    if clip.error:
        return [str(clip.path), float("nan"), "", None, clip.error]
    if clip.silent:
        return [str(clip.path), float("nan"), SILENT, len(clip.logits), ""]
    seg_logits = torch.stack(clip.logits)[None]                       # [1, S, C]
    if isinstance(model, OnnxClassifier):                             # clip.emb holds the attention scores
        logits = model.pool(seg_logits[0], torch.stack(clip.emb))[None]
    else:
        emb = torch.stack(clip.emb) if attention else seg_logits[0]   # pool only reads emb for attention
        logits = model.model.pool(seg_logits, emb, torch.ones(seg_logits.shape[:2], dtype=torch.bool))
    p = float(torch.softmax(logits, dim=-1)[0, 1])
    return [str(clip.path), p, "noise" if p >= threshold else "clean", len(clip.logits), ""]


def _segment_rows(clip: _Clip, cfg: AudioConfig, threshold: float) -> list[list]:
    """One scored file's rows of the segment table: times as `audio.segment_times` gives them, P(noise), label."""
    p = torch.softmax(torch.stack(clip.logits), dim=-1)[:, 1].tolist()
    times = segment_times(clip.n_samples, cfg)
    if clip.silent:
        return [[str(clip.path), i, round(t0, 6), round(t1, 6), float("nan"), SILENT] for i, (t0, t1) in enumerate(times)]
    return [[str(clip.path), i, round(t0, 6), round(t1, 6), pi, "noise" if pi >= threshold else "clean"]
            for i, ((t0, t1), pi) in enumerate(zip(times, p))]


def write_predictions(clips: pd.DataFrame, out, segments: pd.DataFrame | None = None) -> list[Path]:
    """Write clips to `out` and segments to `<out stem>_segments.csv` beside it (atomically); returns the paths."""
    out = Path(out)
    written = [atomic_write(out, lambda f: clips.to_csv(f, index=False, float_format="%.6f"), mode="w")]
    if segments is not None:
        seg_out = segments_path(out)
        written.append(atomic_write(seg_out, lambda f: segments.to_csv(f, index=False, float_format="%.6f"),
                                    mode="w"))
    return written


def segments_path(out) -> Path:
    """Where `write_predictions` puts the segment table for clip table `out`: `<out stem>_segments.csv` beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}_segments.csv")


def summary_text(clips: pd.DataFrame, max_errors: int = 10) -> str:
    """A few lines for the terminal: how many files were scored and failed, and the first errors."""
    failed = clips[clips["error"] != ""]
    ok = clips[clips["error"] == ""]
    silent = f", {(ok['label'] == SILENT).sum()} silent" if (ok["label"] == SILENT).any() else ""
    lines = [f"{len(clips)} files: {len(ok)} scored ({(ok['label'] == 'noise').sum()} noise, "
             f"{(ok['label'] == 'clean').sum()} clean{silent}), {len(failed)} failed"]
    if clips.attrs.get("n_ignored"):
        lines.append(f"  ({clips.attrs['n_ignored']} files in the folders were not audio by extension "
                     f"and were left out)")
    lines += [f"  error: {e}" for e in failed["error"].head(max_errors)]
    if len(failed) > max_errors:
        lines.append(f"  ... and {len(failed) - max_errors} more (see the error column)")
    return "\n".join(lines)
