"""Long recordings read block by block, in bounded memory: mixed to mono, resampled to the run's rate
with an exact streaming version of `audio.resample` (`StreamResampler`), and cut into the windows
`audio.stream_windows_of` gives a whole clip (`Segmenter`), delivered as stretches of audio that
`LogMel.stretch` turns into the clip's segment features (`stream_stretches`). `stream_samples` gives the
resampled samples themselves, block by block, for the ONNX model (`onnx_model.OnnxClassifier.stream_file`).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from ..audio import check_wav_size, n_segments, require_file
from ..config import AudioConfig
from ..errors import DataError

BLOCK_FRAMES = 1 << 20  # frames read per block (about a minute at 16 kHz)


class StreamResampler:
    """Resamples a signal block by block with exactly the result of one `audio.resample` on all of it."""

    def __init__(self, orig_rate: int, new_rate: int):
        self.resampler = torchaudio.transforms.Resample(orig_rate, new_rate)  # default sinc_interp_hann
        g = math.gcd(orig_rate, new_rate)
        self.o, self.n = orig_rate // g, new_rate // g  # output frame k: n samples from input [k*o - w, k*o + o + w)
        self.w = self.resampler.width
        self.margin = -(-self.w // self.o)  # frames of left context, so margin * o >= w
        self.buf = np.zeros(self.margin * self.o, np.float32)  # leading zeros = torchaudio's left padding
        self.frame = 0  # next output frame
        self.n_in = 0   # input samples seen

    def _run(self, last_frame: int | None) -> np.ndarray:
        """Output frames self.frame .. last_frame (all the buffer allows when None)."""
        with torch.no_grad():
            y = self.resampler(torch.from_numpy(self.buf)).numpy()
        y = y[self.margin * self.n:] if last_frame is None else \
            y[self.margin * self.n:(self.margin + last_frame - self.frame + 1) * self.n]
        return y

    def push(self, x: np.ndarray) -> np.ndarray:
        """Feed input samples; returns the output samples that are now final."""
        self.buf = np.concatenate([self.buf, x])
        self.n_in += len(x)
        last = (self.n_in - self.w) // self.o - 1  # the last frame whose input window is complete
        if last < self.frame:
            return np.zeros(0, np.float32)
        y = self._run(last)
        self.frame = last + 1
        start = (self.frame - self.margin) * self.o  # absolute index of the new buffer's first sample
        self.buf = self.buf[start - (self.n_in - len(self.buf)):]
        return y

    def finish(self) -> np.ndarray:
        """Flush at the end of the signal (zero padding on the right, as torchaudio does)."""
        total = -(-self.n * self.n_in // self.o)  # ceil(n * length / o) samples in all
        done = self.frame * self.n
        if done >= total:
            return np.zeros(0, np.float32)
        return self._run(None)[:total - done]


class Segmenter:
    """Cuts a stream into `audio.stream_windows_of`'s windows: `hop_samples` apart, each the segment plus
    `context` samples on either side (the clip's reflect padding at its two ends).

    The windows complete after each push come as one stretch of the stream that they span
    (`LogMel.stretch` reads it), not one copy per window: consecutive windows overlap."""

    def __init__(self, cfg: AudioConfig):
        self.win, self.hop, self.cfg, self.ctx = cfg.segment_samples, cfg.hop_samples, cfg, cfg.context
        self.width = self.win + 2 * self.ctx
        self.head = np.zeros(0, np.float32)  # the clip's first ctx + 1 samples, until they are all here
        self.buf = np.zeros(0, np.float32)   # the padded stream (reflected head, then the clip) from `start`
        self.start = 0  # index of buf[0] in the padded stream
        self.n = 0      # clip samples seen
        self.i = 0      # next window index

    def push(self, x: np.ndarray):
        """Feed samples; yields the stretch spanning every window that is now complete (if any)."""
        self.n += len(x)
        if len(self.head) <= self.ctx:  # the left reflection needs samples 1..ctx of the clip
            self.head = np.concatenate([self.head, x])
            if len(self.head) <= self.ctx:
                return
            x, self.head = np.concatenate([self.head[self.ctx:0:-1], self.head]), self.head[:self.ctx + 1]
        self.buf = np.concatenate([self.buf, x]) if len(self.buf) else x
        yield from self._stretch(self.ctx + self.n)

    def _stretch(self, available: int):
        """Yield the stretch spanning every window now complete within the first `available` samples of the
        padded stream, then drop the samples no later window reads."""
        count = max(0, (available - self.i * self.hop - self.width) // self.hop + 1)
        if count:
            a = self.i * self.hop - self.start
            yield self.buf[a:a + (count - 1) * self.hop + self.width].copy()
            self.i += count
        drop = min(self.i * self.hop, available) - self.start
        self.buf, self.start = self.buf[drop:], self.start + drop

    def finish(self):
        """Yields the stretch spanning the remaining windows: the clip zero-padded to its last window, then reflected."""
        total = (n_segments(self.n, self.cfg) - 1) * self.hop + self.win  # the zero-padded clip's length
        if len(self.head) <= self.ctx:  # the clip ended before the head was complete
            clip = np.pad(self.head, (0, total - len(self.head)))
            self.buf, self.start = np.concatenate([clip[self.ctx:0:-1], clip]), 0
        else:
            self.buf = np.pad(self.buf, (0, self.ctx + total - self.start - len(self.buf)))
        if self.ctx:  # reflect the last ctx samples before the end (padded-stream indices total-1 .. total+ctx-2)
            self.buf = np.concatenate([self.buf, self.buf[total - 1 - self.start:total + self.ctx - 1 - self.start][::-1]])
        yield from self._stretch(total + 2 * self.ctx)


def open_audio(path: Path) -> sf.SoundFile:
    """Open a file for block reading, with `audio.load_audio`'s checks (missing, empty, truncated, not audio)."""
    require_file(path)
    try:
        f = sf.SoundFile(str(path))
    except Exception as e:  # LibsndfileError / RuntimeError / TypeError
        raise DataError(f"{path}: not a readable audio file ({e})") from None
    try:
        if f.format in ("WAV", "WAVEX"):
            check_wav_size(path)
    except BaseException:
        f.close()
        raise
    return f


def stream_samples(path, cfg: AudioConfig, block_frames: int = BLOCK_FRAMES, on_block=None, on_samples=None):
    """Yield one file's samples at the run's rate, mono float32, block by block (`block_frames` read at a
    time), in bounded memory however long the file. Returns (via StopIteration.value) their number.

    Raises DataError naming the file when it is missing, empty, truncated, not audio, or holds NaN/inf
    samples. `on_block(seconds)` is called after each block with the seconds of audio it held, and
    `on_samples(x)` with every piece of samples before it is yielded (e.g. to follow the peak level).
    """
    path = Path(path)
    n = 0
    with open_audio(path) as f:
        rs = StreamResampler(f.samplerate, cfg.sample_rate) if f.samplerate != cfg.sample_rate else None
        while True:
            try:
                block = f.read(block_frames, dtype="float32", always_2d=True)
            except Exception as e:
                raise DataError(f"{path}: not a readable audio file ({e})") from None
            if block.shape[0] == 0:
                break
            if not np.isfinite(block).all():
                raise DataError(f"{path}: audio contains NaN or inf samples")
            x = block.mean(axis=1) if block.shape[1] > 1 else np.ascontiguousarray(block[:, 0])
            x = rs.push(x) if rs else x
            n += len(x)
            if on_samples:
                on_samples(x)
            yield x
            if on_block:
                on_block(block.shape[0] / f.samplerate)
        if rs is not None:
            x = rs.finish()
            n += len(x)
            if on_samples:
                on_samples(x)
            yield x
    if n == 0:
        raise DataError(f"{path}: audio has 0 samples")
    return n


def stream_stretches(path, cfg: AudioConfig, block_frames: int = BLOCK_FRAMES, on_block=None, on_samples=None):
    """Yield one file's segment windows at the run's rate, in order, as `Segmenter` stretches (float32).

    Reads the file as `stream_samples` does (bounded memory, the same errors, `on_block` and `on_samples` calls).
    Returns (via StopIteration.value) the clip's length in samples at the run's rate.
    """
    seg = Segmenter(cfg)
    samples = stream_samples(path, cfg, block_frames, on_block, on_samples)
    while True:
        try:
            x = next(samples)
        except StopIteration:
            break
        yield from seg.push(x)
    yield from seg.finish()
    return seg.n
