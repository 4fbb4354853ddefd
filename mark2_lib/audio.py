"""Audio in: reading files, fixed-window segmentation and the log-mel front end.

Every path from a waveform to model input goes through `LogMel` (whole clips) or
`LogMel.windows` (streamed windows), which compute the same frames, so cached training
features and the deployed classifier agree exactly.

Framing (`AudioConfig.framing`): with "clip" the STFT frames are laid out once on the
whole clip (zero-padded to a whole number of segments, reflect-padded by n_fft // 2 at
both ends) and each segment takes its `n_frames` frames from there, so every sample is
transformed once; with "segment" (runs saved before framing existed) each 1 s window is
framed on its own, reflect-padded at its own edges, so overlapping windows are transformed
twice. Both give `[S, n_mels, n_frames]` per clip.
"""
from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from .config import AudioConfig
from .errors import DataError


def check_wav_size(path: Path) -> None:
    """libsndfile silently shortens a truncated WAV, so compare the data chunk's size with the file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return  # RF64 / W64 / not RIFF: leave it to libsndfile
        order, pos = "<" if head[:4] == b"RIFF" else ">", 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk, n = struct.unpack(order + "4sI", f.read(8))
            if chunk == b"data":
                if n not in (0, 0xFFFFFFFF) and pos + 8 + n > size:  # 0 / -1: streamed, size unknown
                    raise DataError(f"{path}: truncated: the WAV header promises {n} bytes of audio "
                                    f"but the file holds {size - pos - 8}")
                return
            pos += 8 + n + (n & 1)


def require_file(path: Path) -> None:
    """DataError naming the file when it is missing or empty (0 bytes)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")


def read_audio(path: str | Path, dtype: str = "float32") -> tuple[np.ndarray, int]:
    """Decode a whole file with soundfile and mix it to mono: (1-D `dtype` samples, sample rate).

    Shared by `load_audio` and the mixture builder. Raises DataError naming the file when it is
    missing, empty, truncated, not audio, or holds 0 samples or NaN/inf samples.
    """
    path = Path(path)
    require_file(path)
    try:
        info = sf.info(str(path))
        if info.format in ("WAV", "WAVEX"):
            check_wav_size(path)
        data, sr = sf.read(str(path), dtype=dtype, always_2d=True)
    except DataError:
        raise
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise DataError(f"{path}: not a readable audio file ({e})") from None
    if data.shape[0] == 0:
        raise DataError(f"{path}: audio has 0 samples")
    if not np.isfinite(data).all():
        raise DataError(f"{path}: audio contains NaN or inf samples")
    return (data.mean(axis=1) if data.shape[1] > 1 else data[:, 0].copy()), sr


def load_audio(path: str | Path, sample_rate: int = 16000) -> torch.Tensor:
    """Read a file (`read_audio`) and resample it to `sample_rate`; returns 1-D float32 audio.

    Raises DataError naming the file when it is missing, empty, truncated, not audio,
    or holds NaN/inf samples.
    """
    data, sr = read_audio(path)
    return resample(torch.from_numpy(data), sr, sample_rate)


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling with torchaudio; a no-op when the rates match."""
    if orig_rate == new_rate:
        return wave.contiguous()
    return torchaudio.functional.resample(wave, orig_rate, new_rate).contiguous()


def n_segments(n_samples: int, cfg: AudioConfig) -> int:
    """Number of windows for a clip: at least 1; the last window is zero-padded."""
    win, hop = cfg.segment_samples, cfg.hop_samples
    if n_samples <= win:
        return 1
    return 1 + math.ceil((n_samples - win) / hop)


def segment_waveform(wave: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Cut `[..., samples]` into `[..., S, segment_samples]` windows, zero-padding the last."""
    win, hop = cfg.segment_samples, cfg.hop_samples
    s = n_segments(wave.shape[-1], cfg)
    total = (s - 1) * hop + win
    if total > wave.shape[-1]:
        wave = torch.nn.functional.pad(wave, (0, total - wave.shape[-1]))
    return wave[..., :total].unfold(-1, win, hop)


def segment_times(n_samples: int, cfg: AudioConfig) -> list[tuple[float, float]]:
    """(start, end) seconds of every segment, end clipped to the clip's length."""
    dur = n_samples / cfg.sample_rate
    return [
        (i * cfg.hop_seconds, min(i * cfg.hop_seconds + cfg.segment_seconds, dur))
        for i in range(n_segments(n_samples, cfg))
    ]


class LogMel(torch.nn.Module):
    """Log-mel in dB of whole clips (`forward`) or of streamed windows (`windows`), per `AudioConfig.framing`.

    Hann-windowed real FFT, power re² + im², HTK mel filterbank (torchaudio's `melscale_fbanks`),
    10 · log10(max(power, 1e-10)): torchaudio's MelSpectrogram + AmplitudeToDB(top_db=None) up
    to float rounding, with frames laid out as `AudioConfig.framing` says. No top_db: its clamp is
    relative to a batch maximum, which would make a clip's features depend on the rest of the batch.
    """

    def __init__(self, cfg: AudioConfig):
        super().__init__()
        window = torch.hann_window(cfg.win_length)
        left = (cfg.n_fft - cfg.win_length) // 2  # torch.stft centres a shorter window in n_fft
        self.register_buffer("window", torch.nn.functional.pad(window, (left, cfg.n_fft - cfg.win_length - left)))
        fb = torchaudio.functional.melscale_fbanks(cfg.n_fft // 2 + 1, cfg.f_min, cfg.f_max, cfg.n_mels,
                                                   cfg.sample_rate)
        self.register_buffer("fb", fb.contiguous())  # [n_fft // 2 + 1, n_mels]
        self.n_fft, self.hop_length, self.n_frames = cfg.n_fft, cfg.hop_length, cfg.n_frames
        self.segment_samples, self.hop_samples = cfg.segment_samples, cfg.hop_samples
        self.clip_framing = cfg.framing == "clip"
        self.frame_step = cfg.hop_samples // cfg.hop_length  # frames between segment starts (clip framing)

    def frames_db(self, x: torch.Tensor, centre: bool) -> torch.Tensor:
        """`[..., samples]` -> log-mel `[..., frames, n_mels]`; `centre` reflect-pads n_fft // 2 at both ends."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        frames = self.windowed_frames(x, centre)
        sq = torch.view_as_real(torch.fft.rfft(frames)).square_()
        power = sq[..., 0] + sq[..., 1]  # re² + im², no sqrt
        db = torch.matmul(power, self.fb).clamp_min_(1e-10).log10_().mul_(10.0)
        return db.reshape(shape[:-1] + db.shape[-2:])

    def windowed_frames(self, x: torch.Tensor, centre: bool) -> torch.Tensor:
        """`[N, samples]` -> Hann-windowed STFT frames `[N, frames, n_fft]`, as torch.stft frames them.

        `centre` reflect-pads n_fft // 2 samples at both ends. Only the frames that reach into
        the padding are cut from small padded copies of the two ends; the others are windowed
        straight out of `x`, so the waveform is never copied whole to pad it.
        """
        n_fft, hop, n = self.n_fft, self.hop_length, x.shape[-1]
        if not centre:
            return x.unfold(-1, n_fft, hop) * self.window
        c = n_fft // 2
        n_frames = n // hop + 1
        first = (c + hop - 1) // hop                 # the first frame that starts inside x
        last = (n + c - n_fft) // hop                # the last frame that ends inside x
        if n <= 2 * n_fft or last < first:           # short input: pad it whole (reflect, as torch.stft)
            x = torch.cat([x[:, 1:c + 1].flip(-1), x, x[:, n - c - 1:n - 1].flip(-1)], dim=-1)
            return x.unfold(-1, n_fft, hop) * self.window
        out = x.new_empty(x.shape[0], n_frames, n_fft)
        torch.mul(x[:, first * hop - c:last * hop - c + n_fft].unfold(-1, n_fft, hop), self.window,
                  out=out[:, first:last + 1])
        head = torch.cat([x[:, 1:c + 1].flip(-1), x[:, :(first - 1) * hop - c + n_fft]], dim=-1)
        torch.mul(head.unfold(-1, n_fft, hop), self.window, out=out[:, :first])
        if last + 1 < n_frames:
            tail = torch.cat([x[:, (last + 1) * hop - c:], x[:, n - c - 1:n - 1].flip(-1)], dim=-1)
            torch.mul(tail.unfold(-1, n_fft, hop)[:, :n_frames - last - 1], self.window, out=out[:, last + 1:])
        return out

    def whole_segments(self, wave: torch.Tensor) -> torch.Tensor:
        """`[..., samples]` cut or zero-padded to the samples its segments span: `(S - 1) * hop + segment`."""
        n, win, hop = wave.shape[-1], self.segment_samples, self.hop_samples
        s = 1 if n <= win else 1 + (n - win + hop - 1) // hop
        total = (s - 1) * hop + win
        return wave[..., :total] if n >= total else torch.nn.functional.pad(wave, (0, total - n))

    def segments(self, wave: torch.Tensor) -> torch.Tensor:
        """`[..., samples]` -> `[..., S, segment_samples]` windows, the last zero-padded (as `segment_waveform`)."""
        return self.whole_segments(wave).unfold(-1, self.segment_samples, self.hop_samples)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Whole clips `[..., samples]` -> segment features `[..., S, n_mels, n_frames]`."""
        if not self.clip_framing:
            return self.frames_db(self.segments(wave), centre=True).transpose(-1, -2)
        frames = self.clip_frames(wave)                                 # [..., (S - 1) * step + n_frames, n_mels]
        return frames.unfold(-2, self.n_frames, self.frame_step)        # [..., S, n_mels, n_frames]

    def clip_frames(self, wave: torch.Tensor) -> torch.Tensor:
        """Clip framing: whole clips `[..., samples]`, zero-padded to whole segments (as `segments` pads
        them) -> log-mel frames `[..., frames, n_mels]`; segment s holds frames s * frame_step onwards."""
        return self.frames_db(self.whole_segments(wave), centre=True)

    def stretch(self, stretch: torch.Tensor) -> torch.Tensor:
        """Consecutive streamed windows given as the one stretch of stream they span, `[(count - 1) *
        hop_samples + segment_samples + 2 * context]` -> their features `[count, n_mels, n_frames]`, as
        `windows` gives them. With clip framing the stretch is framed once and overlapping windows
        share its frames, so each sample is transformed once rather than once per window holding it."""
        if not self.clip_framing:
            return self.windows(stretch.unfold(-1, self.segment_samples, self.hop_samples))
        return self.frames_db(stretch, centre=False).unfold(-2, self.n_frames, self.frame_step)

    def windows(self, windows: torch.Tensor) -> torch.Tensor:
        """Streamed windows `[N, segment_samples + 2 * context]` (`AudioConfig.context`) -> `[N, n_mels, n_frames]`.

        With clip framing each window carries n_fft // 2 samples of the clip (or of its reflect
        padding) on both sides, so its frames equal the clip's; with segment framing it is the
        bare window, padded here as `forward` pads it.
        """
        return self.frames_db(windows, centre=not self.clip_framing).transpose(-1, -2)


def stream_windows_of(wave: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """A clip's windows as a stream delivers them to `LogMel.windows`: `[S, segment_samples + 2 * context]`."""
    c = cfg.context
    windows = segment_waveform(wave, cfg)
    if not c:
        return windows
    total = (windows.shape[-2] - 1) * cfg.hop_samples + cfg.segment_samples
    clip = torch.nn.functional.pad(wave, (0, total - wave.shape[-1])) if total > wave.shape[-1] else wave[..., :total]
    padded = torch.nn.functional.pad(clip.unsqueeze(0), (c, c), mode="reflect").squeeze(0)
    return padded.unfold(-1, cfg.segment_samples + 2 * c, cfg.hop_samples)


def clip_features(wave: torch.Tensor, cfg: AudioConfig, logmel: LogMel | None = None) -> torch.Tensor:
    """One clip's features `[S, n_mels, frames]`: log-mel frames of each segment (see `LogMel`)."""
    logmel = logmel if logmel is not None else LogMel(cfg)
    with torch.no_grad():
        return logmel(wave)
