"""Tests for mark2_lib.audio: segmentation properties, resampling, mono mix and file errors."""
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings, strategies as st

from mark2_lib import audio
from mark2_lib.audio import AudioConfig, DataError

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


def test_clip_features_shape():
    cfg = AudioConfig()
    feats = audio.clip_features(torch.randn(int(2.3 * cfg.sample_rate)), cfg)
    assert feats.shape == (audio.n_segments(int(2.3 * cfg.sample_rate), cfg), cfg.n_mels, cfg.n_frames)
    assert feats.dtype == torch.float32 and torch.isfinite(feats).all()


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
