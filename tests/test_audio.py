"""Tests for mark2_lib.audio: segmentation properties, resampling, mono mix and file errors."""
import dataclasses
import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from hypothesis import given, settings
from hypothesis import strategies as st

from mark2_lib import audio, config
from mark2_lib.config import AudioConfig, audio_config
from mark2_lib.errors import DataError

FAST = settings(max_examples=60, deadline=None)


def small_cfg(segment: int, hop: int) -> AudioConfig:
    """A 1 kHz config, so segment/hop in samples are the same numbers as in milliseconds."""
    return AudioConfig(sample_rate=1000, segment_seconds=segment / 1000, hop_seconds=hop / 1000,
                       n_fft=16, win_length=16, hop_length=4, n_mels=4, f_min=0.0, f_max=500.0)


def write_wav(path, x, sr, subtype="PCM_16"):
    sf.write(str(path), x, sr, subtype=subtype)
    return path


def tone(seconds, sr, freq=440.0, channels=1):
    t = np.arange(int(round(seconds * sr))) / sr
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


# ----------------------------------------------------------------------------- segmentation

@FAST
@given(n=st.integers(1, 400), segment=st.integers(1, 60), hop=st.integers(1, 80))
def test_segment_count_and_coverage(n, segment, hop):
    cfg = small_cfg(segment, hop)
    s = audio.n_segments(n, cfg)
    assert s >= 1
    assert (s - 1) * hop + segment >= n  # every sample lies in some window (or a gap when hop > segment)
    if s > 1:
        assert (s - 2) * hop + segment < n  # and no window starts past the end
    assert s == (1 if n <= segment else 1 + math.ceil((n - segment) / hop))


@FAST
@given(n=st.integers(1, 400), segment=st.integers(1, 60), hop=st.integers(1, 80), batch=st.integers(0, 2))
def test_segment_windows_equal_source_slices(n, segment, hop, batch):
    cfg = small_cfg(segment, hop)
    shape = (batch, n) if batch else (n,)
    wave = torch.arange(1, 1 + math.prod(shape), dtype=torch.float32).reshape(shape)  # no zeros inside
    windows = audio.segment_waveform(wave, cfg)
    s = audio.n_segments(n, cfg)
    assert windows.shape == shape[:-1] + (s, segment)
    for i in range(s):
        src = wave[..., i * hop: i * hop + segment]
        k = src.shape[-1]
        assert torch.equal(windows[..., i, :k], src)
        assert (windows[..., i, k:] == 0).all()  # only the part past the end is zero padding
    last_real = n - (s - 1) * hop
    assert (windows[..., -1, last_real:] == 0).all()
    if last_real < segment:
        assert windows.shape[-1] - last_real == (s - 1) * hop + segment - n


@given(n=st.integers(1, 3 * 16000))
@settings(max_examples=30, deadline=None)
def test_default_config_every_clip_has_a_segment(n):
    cfg = AudioConfig()
    assert audio.n_segments(n, cfg) >= 1
    assert audio.segment_waveform(torch.zeros(n), cfg).shape == (audio.n_segments(n, cfg), cfg.segment_samples)
    times = audio.segment_times(n, cfg)
    assert len(times) == audio.n_segments(n, cfg) and times[-1][1] <= n / cfg.sample_rate + 1e-9


@pytest.mark.parametrize("framing", ["segment", "clip"])
def test_clip_features_shape(framing):
    cfg = AudioConfig(framing=framing)
    feats = audio.clip_features(torch.randn(int(2.3 * cfg.sample_rate)), cfg)
    assert feats.shape == (audio.n_segments(int(2.3 * cfg.sample_rate), cfg), cfg.n_mels, cfg.n_frames)
    assert feats.dtype == torch.float32 and torch.isfinite(feats).all()


# ----------------------------------------------------------------------------- log-mel front end

def torchaudio_logmel(cfg: AudioConfig, x: torch.Tensor) -> torch.Tensor:
    """The reference: torchaudio's centred MelSpectrogram (power 2) in dB without top_db."""
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.win_length, hop_length=cfg.hop_length,
        f_min=cfg.f_min, f_max=cfg.f_max, n_mels=cfg.n_mels, power=2.0, center=True)
    return torchaudio.transforms.AmplitudeToDB(stype="power", top_db=None)(mel(x))


@pytest.mark.parametrize("win_length", [512, 400])
def test_segment_framing_equals_torchaudio_per_window(win_length):
    cfg = AudioConfig(win_length=win_length)
    wave = 0.1 * torch.randn(int(2.7 * cfg.sample_rate), generator=torch.Generator().manual_seed(0))
    ref = torchaudio_logmel(cfg, audio.segment_waveform(wave, cfg))  # each window framed on its own
    torch.testing.assert_close(audio.clip_features(wave, cfg), ref, atol=2e-4, rtol=0)


@pytest.mark.parametrize("hop_length", [320, 800])
def test_clip_framing_slices_the_whole_clips_frames(hop_length):
    cfg = AudioConfig(framing="clip", hop_length=hop_length, n_mels=32)
    n = int(2.7 * cfg.sample_rate)
    wave = 0.1 * torch.randn(n, generator=torch.Generator().manual_seed(1))
    s = audio.n_segments(n, cfg)
    padded = torch.nn.functional.pad(wave, (0, (s - 1) * cfg.hop_samples + cfg.segment_samples - n))
    ref = torchaudio_logmel(cfg, padded)  # one centred STFT of the zero-padded clip
    step = cfg.hop_samples // cfg.hop_length
    assert ref.shape[-1] == (s - 1) * step + cfg.n_frames
    feats = audio.clip_features(wave, cfg)
    for i in range(s):
        torch.testing.assert_close(feats[i], ref[:, i * step:i * step + cfg.n_frames], atol=2e-4, rtol=0)
    # segment i's first frames see the end of segment i - 1: the two framings differ only at window edges
    seg = audio.clip_features(wave, AudioConfig(hop_length=hop_length, n_mels=32))
    torch.testing.assert_close(feats[:, :, 1:-1], seg[:, :, 1:-1], atol=2e-4, rtol=0)
    assert not torch.allclose(feats[1:, :, 0], seg[1:, :, 0], atol=1e-2)


@FAST
@given(n=st.integers(9, 400), n_fft=st.sampled_from([16, 18, 32]), hop=st.integers(1, 40))
def test_windowed_frames_equal_reflect_padded_framing(n, n_fft, hop):
    """The frames are cut without copying the whole padded waveform, bit for bit as torch.stft lays them out."""
    cfg = AudioConfig(sample_rate=1000, segment_seconds=0.04, hop_seconds=0.02, n_fft=n_fft, win_length=n_fft - 2,
                      hop_length=hop, n_mels=4, f_min=0.0, f_max=500.0)
    logmel = audio.LogMel(cfg)
    x = torch.randn(2, n, generator=torch.Generator().manual_seed(n))
    c = n_fft // 2
    if n <= c:  # reflect padding needs more samples than it adds, as for torch.stft
        return
    padded = torch.nn.functional.pad(x[:, None], (c, c), mode="reflect")[:, 0]
    ref = padded.unfold(-1, n_fft, hop) * logmel.window
    got = logmel.windowed_frames(x, centre=True)
    assert got.shape == ref.shape == (2, n // hop + 1, n_fft)
    assert torch.equal(got, ref)


@FAST
@given(n=st.integers(1, 300), framing=st.sampled_from(["segment", "clip"]), batch=st.integers(0, 2))
def test_streamed_windows_give_the_clips_features(n, framing, batch):
    cfg = AudioConfig(sample_rate=1000, segment_seconds=0.04, hop_seconds=0.02, n_fft=16, win_length=16,
                      hop_length=4, n_mels=4, f_min=0.0, f_max=500.0, framing=framing)
    logmel = audio.LogMel(cfg)
    shape = (batch, n) if batch else (n,)
    waves = torch.randn(shape, generator=torch.Generator().manual_seed(n))
    feats = logmel(waves)
    assert feats.shape == shape[:-1] + (audio.n_segments(n, cfg), cfg.n_mels, cfg.n_frames)
    for i, wave in enumerate(waves.reshape(-1, n)):
        windows = audio.stream_windows_of(wave, cfg)
        assert windows.shape == (audio.n_segments(n, cfg), cfg.segment_samples + 2 * cfg.context)
        torch.testing.assert_close(logmel.windows(windows), feats.reshape((-1,) + feats.shape[-3:])[i],
                                   atol=1e-4, rtol=0)


def test_framing_settings_are_checked_and_old_configs_keep_their_key():
    old = {f.name: getattr(AudioConfig(), f.name) for f in dataclasses.fields(AudioConfig) if f.name != "framing"}
    assert AudioConfig().to_dict() == old  # written as before framing existed (config.json, run names)
    assert AudioConfig.from_dict(old).framing == "segment"  # saved before framing existed
    assert AudioConfig.from_dict(old).key() == AudioConfig().key()  # so its feature cache is still found
    assert AudioConfig(framing="clip").key() != AudioConfig().key()
    with pytest.raises(ValueError, match="framing='frames'.*clip"):
        AudioConfig(framing="frames")
    with pytest.raises(ValueError, match="hop_seconds.*8000 samples.*hop_length=640"):
        AudioConfig(framing="clip", hop_length=640)  # 16000 = 25 x 640, but 8000 is not whole frames
    with pytest.raises(ValueError, match="n_fft=511"):
        AudioConfig(framing="clip", n_fft=511, win_length=400)
    with pytest.raises(ValueError, match="unknown AudioConfig fields: \\['window'\\]"):
        AudioConfig.from_dict({**old, "window": "hann"})


# ----------------------------------------------------------------------------- resampling

@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5000), rates=st.sampled_from([(44100, 16000), (48000, 16000), (22050, 16000),
                                                     (8000, 16000), (11025, 16000), (7350, 16000),
                                                     (96000, 16000), (16000, 44100)]))
def test_resample_length(n, rates):
    orig, new = rates
    out = audio.resample(torch.randn(n), orig, new)
    assert out.ndim == 1 and abs(out.shape[0] - round(n * new / orig)) <= 1


def test_resample_same_rate_is_identity():
    x = torch.randn(1234)
    assert torch.equal(audio.resample(x, 16000, 16000), x)


@pytest.mark.parametrize("sr", [8000, 11025, 22050, 44100, 48000, 7350, 37800, 96000])
def test_unusual_sample_rates_converted(tmp_path, sr):
    x = tone(1.0, sr)
    path = write_wav(tmp_path / f"t{sr}.wav", x, sr, subtype="FLOAT")
    y = audio.load_audio(path, 16000).numpy()
    assert abs(len(y) - round(len(x) * 16000 / sr)) <= 1
    ref = tone(len(y) / 16000, 16000)[: len(y)]
    mid = slice(1000, len(y) - 1000)  # away from the filter's edge effects
    np.testing.assert_allclose(y[mid], ref[mid], atol=0.02)


def test_load_44k_length(tmp_path):
    n = 44100 * 2 + 17
    path = write_wav(tmp_path / "a.wav", np.random.default_rng(0).normal(0, 0.1, n), 44100)
    y = audio.load_audio(path, 16000)
    assert y.dtype == torch.float32 and y.ndim == 1
    assert abs(len(y) - round(n * 16000 / 44100)) <= 1


def test_stereo_mixed_to_mono(tmp_path):
    rng = np.random.default_rng(1)
    left, right = rng.uniform(-0.5, 0.5, 8000), rng.uniform(-0.5, 0.5, 8000)
    path = write_wav(tmp_path / "st.wav", np.stack([left, right], 1), 16000, subtype="FLOAT")
    y = audio.load_audio(path, 16000).numpy()
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)


# ----------------------------------------------------------------------------- bad files

def _valid(tmp_path, name="ok.wav", subtype="PCM_16"):
    return write_wav(tmp_path / name, tone(1.0, 16000), 16000, subtype=subtype)


def _assert_error(path, *words):
    with pytest.raises(DataError) as e:
        audio.load_audio(path, 16000)
    assert str(path) in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_missing_file(tmp_path):
    _assert_error(tmp_path / "nope.wav", "not found")


def test_empty_file(tmp_path):
    (tmp_path / "e.wav").write_bytes(b"")
    _assert_error(tmp_path / "e.wav", "empty")


def test_header_only_file(tmp_path):
    path = _valid(tmp_path)
    path.write_bytes(path.read_bytes()[:44])
    _assert_error(path, "truncated")  # the header promises 1 s of audio; none follows


@pytest.mark.parametrize("keep", [4, 12, 30])
def test_cut_inside_header(tmp_path, keep):
    path = _valid(tmp_path)
    path.write_bytes(path.read_bytes()[:keep])
    _assert_error(path)


@pytest.mark.parametrize("cut", [1, 1000])
def test_truncated_wav(tmp_path, cut):
    path = _valid(tmp_path)
    path.write_bytes(path.read_bytes()[:-cut])
    _assert_error(path, "truncated")


def test_text_file_with_wav_name(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("clip_id,path,label\nthis is not audio\n")
    _assert_error(path, "not a readable audio file")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, bad):
    x = tone(0.5, 16000)
    x[100] = bad
    path = write_wav(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    _assert_error(path, "NaN or inf")


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)


# LogMel's output for `_golden_signal()` with each size's front end (rounded to 0.01 dB). If this test
# fails after a deliberate change to the front end, bump config.FEATURES_VERSION, so that feature
# caches and runs made by the old code are not reused, and write the new values here.
FEATURES_GOLDEN = {
    "student": (  # per-band means, then per-frame means, dB
        [-15.30, -14.99, -14.90, -14.81, -14.47, -12.94, -12.96, -11.89, -12.38, -11.64, -10.99, -9.52,
         -8.56, -7.92, -7.26, -6.38, -6.29, -5.86, -5.19, -4.45, -4.72, -6.77, -8.23, -8.55, -7.84, -7.38,
         -7.11, -6.81, -6.42, -6.20, -6.02, -5.58],
        [5.52, 0.37, -0.61, 0.24, -0.04, 5.31, -0.41, -0.35, -0.85, -0.68, 5.44, -0.63, -0.44, 0.19, -0.39,
         4.83, -0.52, 0.21, -1.18, -0.39, 5.32, -0.03, -0.83, -0.60, -0.52, 4.91, -0.46, -0.57, -1.00,
         -33.98, -29.98, -33.84, -33.83, -33.34, -33.51, -29.98, -33.57, -33.71, -34.36, -33.83, -29.86]),
    "teacher": (  # per-band means, then per-frame means, dB
        [-13.67, -13.37, -13.18, -12.86, -12.86, -13.11, -13.66, -12.91, -12.32, -12.23, -12.00, -11.32,
         -12.20, -10.34, -11.25, -10.39, -10.39, -10.12, -10.04, -9.95, -9.66, -9.19, -8.40, -8.00, -7.67,
         -7.61, -7.77, -6.74, -7.19, -6.17, -6.09, -5.61, -5.79, -5.82, -5.30, -5.06, -5.09, -4.93, -4.57,
         -4.56, -4.07, -4.52, -5.10, -5.60, -6.53, -6.52, -6.74, -6.05, -5.81, -5.75, -5.39, -5.32, -5.45,
         -5.09, -4.97, -4.69, -4.30, -4.50, -4.23, -4.11, -4.03, -3.73, -3.66, -3.38],
        [7.42, 2.50, 2.44, 2.21, 2.32, 2.30, 4.74, 2.29, 2.17, 1.80, 1.69, 1.66, 3.12, 2.22, 2.25, 1.91,
         2.35, 1.78, 2.33, 4.27, 2.12, 2.09, 1.30, 1.88, 1.90, 5.61, 2.27, 2.06, 1.73, 1.69, 1.98, 4.52,
         1.84, 2.15, 1.29, 1.18, -32.25, -31.47, -32.14, -31.82, -32.18, -31.89, -32.26, -31.80, -30.47,
         -31.90, -32.24, -32.96, -32.44, -32.18, -31.00]),
}


def _golden_signal() -> torch.Tensor:
    """1.7 s: a chirp, faint white noise and clicks; the last of 3 segments is partly zero padding."""
    rng = np.random.default_rng(0)
    t = np.arange(int(1.7 * 16000)) / 16000
    x = 0.3 * np.sin(2 * np.pi * (200 * t + 900 * t ** 2)) + 0.05 * rng.standard_normal(t.size)
    x[::2000] += 0.8
    return torch.tensor(x, dtype=torch.float32)


@pytest.mark.parametrize("size", sorted(FEATURES_GOLDEN))
def test_front_end_output_matches_features_version(size):
    f = audio.clip_features(_golden_signal(), audio_config(size)).double()
    bands, frames = FEATURES_GOLDEN[size]
    message = (f"the {size} front end's output changed; if that is intended, bump config.FEATURES_VERSION "
               f"(now {config.FEATURES_VERSION}) and update FEATURES_GOLDEN")
    np.testing.assert_allclose(f.mean(dim=(0, 2)).numpy(), bands, rtol=0, atol=0.011, err_msg=message)
    np.testing.assert_allclose(f.mean(dim=(0, 1)).numpy(), frames, rtol=0, atol=0.011, err_msg=message)


def test_cache_key_follows_features_version(monkeypatch):
    key = AudioConfig().key()
    monkeypatch.setattr(config, "FEATURES_VERSION", config.FEATURES_VERSION + 1)
    assert AudioConfig().key() != key
