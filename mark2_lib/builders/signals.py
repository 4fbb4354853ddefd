"""Signal generators of the default data: clean sources (speech, music, room tone) and the seven
noise types, each `f(rng, n_samples, sample_rate) -> float64 waveform` drawn from the given generator.

numpy/scipy only: this module never imports torch.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.signal import lfilter, oaconvolve

VOWELS = np.array([  # F1, F2, F3 in Hz for an adult male talker
    [730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480],
    [570, 840, 2410], [660, 1720, 2410], [490, 1350, 1690], [440, 1020, 2240],
], dtype=float)

# ----------------------------------------------------------------------------- helpers
# db_to_gain, unit_rms and add_mic_floor are shared with synth.py and mixtures.py


def db_to_gain(db: float) -> float:
    """Decibels to an amplitude factor."""
    return 10.0 ** (db / 20.0)


def unit_rms(x: np.ndarray) -> np.ndarray:
    """Scale to unit RMS."""
    return x / math.sqrt(np.mean(x * x) + 1e-30)


def _hiss(rng, n: int) -> np.ndarray:
    """Unit-variance uniform white noise: cheaper than Gaussian where the distribution doesn't matter."""
    return (rng.random(n) - 0.5) * math.sqrt(12.0)


def add_mic_floor(rng, x: np.ndarray) -> np.ndarray:
    """x plus a faint low-passed self-noise floor 40-50 dB down, so clean audio has no digital silence."""
    floor = unit_rms(lfilter([1.0], [1.0, -0.9], _hiss(rng, len(x))))
    return x + db_to_gain(-rng.uniform(40, 50)) * math.sqrt(np.mean(x * x)) * floor


def _coloured(rng, n: int, sr: int, exponent: float, shape=None, f_lo: float = 20.0) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f**exponent, optionally times a gain `shape(f)`."""
    f = np.fft.rfftfreq(n, 1.0 / sr)
    gain = np.maximum(f, f_lo) ** (-exponent / 2.0)
    if shape is not None:
        gain = gain * shape(f)
    spec = rng.standard_normal((2, len(f))) * gain
    spec = spec[0] + 1j * spec[1]
    spec[0] = 0.0
    return np.fft.irfft(spec, n)


def _harmonics(cycles: np.ndarray, amps: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """sum_k amps[k] * sin(2 pi (k+1) cycles + phases[k]) for a phase track in cycles (wavetable)."""
    grid = np.linspace(0.0, 1.0, 2049)
    table = amps @ np.sin(2 * np.pi * np.arange(1, len(amps) + 1)[:, None] * grid + phases[:, None])
    return np.interp(cycles - np.floor(cycles), grid, table)


def _edges(rng, n: int, sr: int, lo: float, hi: float) -> np.ndarray:
    """Cut [0, n) into consecutive segments of lo..hi seconds; returns the boundaries."""
    lengths = rng.uniform(lo, hi, int(n / (lo * sr)) + 2) * sr
    edges = np.concatenate([[0], np.cumsum(lengths).astype(int)])
    return np.append(edges[edges < n], n)


def _adsr(length: int, sr: int, a: float, d: float, s: float, r: float) -> np.ndarray:
    """Attack-decay-sustain-release envelope of `length` samples (times in seconds)."""
    a, d, r = (min(max(int(x * sr), 1), length // 3) for x in (a, d, r))
    return np.interp(np.arange(length), [0, a, a + d, length - r, length], [0, 1, s, s, 0])


# ----------------------------------------------------------------------------- clean sources


def speech(rng, n: int, sr: int) -> np.ndarray:
    """Formant-synthesised talker: glottal pulses through vowel resonators, syllables and pauses."""
    f0 = rng.uniform(90, 250)
    edges = _edges(rng, n, sr, 0.10, 0.25)  # one vowel (syllable) per segment
    k = len(edges) - 1
    scale = (f0 / 120) ** 0.25 * rng.uniform(0.95, 1.08)  # shorter vocal tracts for higher voices
    formants = np.minimum(VOWELS[rng.integers(len(VOWELS), size=k)] * scale, 0.45 * sr)
    bandwidths = np.array([60.0, 90.0, 120.0]) * rng.uniform(0.8, 1.5)
    gains = rng.uniform(0.4, 1.0, k) * (rng.random(k) > 0.15)  # ~15% of segments are pauses
    # pitch: slow random wiggle with declination; one glottal pulse per cycle
    knots = np.arange(0, n + sr // 6, sr // 8)
    pitch = f0 * np.interp(np.arange(n), knots, rng.uniform(0.85, 1.15, len(knots)))
    pitch *= np.linspace(1.05, 0.92, n)
    cycles = np.cumsum(pitch / sr)
    src = np.diff(np.floor(cycles), prepend=0.0)
    src = lfilter([1.0, -1.0], [1.0, -1.9, 0.9025], src)  # glottal roll-off + lip radiation
    src += 0.01 * _hiss(rng, n)  # breathiness
    seg = np.repeat(np.arange(k), np.diff(edges))
    u = (np.arange(n) - edges[seg]) / np.diff(edges)[seg]
    src *= gains[seg] * np.sqrt(np.sin(np.float32(np.pi) * u.astype(np.float32)))  # syllable envelopes
    # three cascaded resonators (one 6th-order filter), retuned per segment, state carried over
    r = np.exp(-np.pi * bandwidths / sr)
    a1, a2 = -2 * r * np.cos(2 * np.pi * formants / sr), r * r  # [k, 3] each
    out, zi = np.empty(n), np.zeros(6)
    for j in range(k):
        a = np.convolve(np.convolve([1.0, a1[j, 0], a2[0]], [1.0, a1[j, 1], a2[1]]), [1.0, a1[j, 2], a2[2]])
        out[edges[j]:edges[j + 1]], zi = lfilter([a.sum()], a, src[edges[j]:edges[j + 1]], zi=zi)
    # fricative bursts (high-passed noise) at some syllable onsets
    onsets = edges[:-1][(rng.random(k) < 0.3) & (gains > 0)]
    fric = np.zeros(n)
    for a in onsets:
        length = min(int(rng.uniform(0.03, 0.08) * sr), n - a)
        fric[a:a + length] = np.hanning(length)
    fric[1:] *= np.diff(_hiss(rng, n))  # high-passed noise
    return unit_rms(out) + db_to_gain(rng.uniform(-20, -8)) * fric


def music(rng, n: int, sr: int) -> np.ndarray:
    """A few harmonic notes of one random timbre with ADSR envelopes, drawn from a scale."""
    out = np.zeros(n)
    steps = [0, 2, 4, 5, 7, 9, 11, 12] if rng.random() < 0.5 else [0, 2, 3, 5, 7, 8, 10, 12]  # major/minor
    root = rng.integers(45, 70)
    rolloff, odd = rng.uniform(0.7, 2.0), rng.uniform(0.2, 1.0)  # timbre: brightness, even-harmonic level
    n_notes = rng.integers(2, 7)
    starts = np.sort(rng.uniform(0, 0.85, n_notes)) * n
    starts[0] = rng.uniform(0, 0.1) * n
    for start in starts.astype(int):
        f = 440.0 * 2 ** ((root + rng.choice(steps) - 69) / 12)
        length = min(int(rng.uniform(0.25, 1.0) * sr), n - start)
        n_harm = int(min(10, 0.45 * sr / f))
        k = np.arange(1, n_harm + 1)
        amps = k ** -rolloff * np.where(k % 2 == 0, odd, 1.0)
        t = np.arange(length) / sr
        vib, rate = rng.uniform(0, 0.006), rng.uniform(4, 6.5)
        cycles = f * t + f * vib / (2 * np.pi * rate) * np.sin(2 * np.pi * rate * t)
        env = _adsr(length, sr, *rng.uniform([0.005, 0.05, 0.3, 0.05], [0.05, 0.2, 0.8, 0.3]))
        tone = _harmonics(cycles, amps, rng.uniform(0, 2 * np.pi, n_harm))
        out[start:start + length] += rng.uniform(0.5, 1.0) * env * tone
    return out


def room(rng, n: int, sr: int) -> np.ndarray:
    """Quiet room tone at about -50 dBFS: low-passed coloured noise with a few low room modes."""
    fc, modes = rng.uniform(1500, 4000), rng.uniform(40, 300, 3)

    def shape(f):
        peaks = sum(np.exp(-(((f - m) / 8.0) ** 2)) for m in modes)
        return (1.0 + 3.0 * peaks) / (1.0 + (f / fc) ** 4)

    return db_to_gain(-50 + rng.uniform(-5, 5)) * unit_rms(_coloured(rng, n, sr, rng.uniform(0.5, 1.5), shape))


# ----------------------------------------------------------------------------- noises


def white(rng, n: int, sr: int) -> np.ndarray:
    """White Gaussian noise."""
    return rng.standard_normal(n)


def pink(rng, n: int, sr: int) -> np.ndarray:
    """Pink (1/f) noise."""
    return _coloured(rng, n, sr, 1.0)


def brown(rng, n: int, sr: int) -> np.ndarray:
    """Brown (1/f^2) noise, flattened below 20 Hz."""
    return _coloured(rng, n, sr, 2.0)


def hum(rng, n: int, sr: int) -> np.ndarray:
    """Mains hum: 50 or 60 Hz with a random buzz profile of harmonics, over faint hiss."""
    f0 = rng.choice([50.0, 60.0]) * rng.uniform(0.998, 1.002)
    k = np.arange(1, int(min(12, 0.45 * sr / f0)) + 1)
    amps = rng.uniform(0.2, 1.0, len(k)) * k ** -rng.uniform(0.5, 2.0)
    amps *= np.where(k % 2, 1.0, rng.uniform(0.2, 1.0))  # odd/even balance of the buzz
    tone = _harmonics(f0 * np.arange(n) / sr, amps, rng.uniform(0, 2 * np.pi, len(k)))
    return unit_rms(tone) + 0.03 * _hiss(rng, n)


def babble(rng, n: int, sr: int) -> np.ndarray:
    """Crowd babble: 4-6 synthetic talkers at random levels."""
    return sum(db_to_gain(rng.uniform(-6, 0)) * unit_rms(speech(rng, n, sr)) for _ in range(rng.integers(4, 7)))


def fan(rng, n: int, sr: int) -> np.ndarray:
    """Fan / engine: band-limited noise plus wobbling blade-pass tones and harmonics."""
    fc, octaves = rng.uniform(150, 1500), rng.uniform(0.5, 1.5)
    band = lambda f: np.exp(-0.5 * (np.log2(np.maximum(f, 1.0) / fc) / octaves) ** 2)  # noqa: E731
    broad = _coloured(rng, n, sr, 0.0, band)
    bpf, h, rate = rng.uniform(60, 400), rng.integers(2, 6), rng.uniform(0.2, 1.0)
    t = np.arange(n) / sr
    cycles = bpf * t + 0.01 * bpf / (2 * np.pi * rate) * np.sin(2 * np.pi * rate * t)  # +-1% speed wobble
    tones = _harmonics(cycles, rng.uniform(0.2, 1.0, h) / np.arange(1, h + 1), rng.uniform(0, 2 * np.pi, h))
    return unit_rms(broad) + db_to_gain(rng.uniform(-10, 3)) * unit_rms(tones)


def clicks(rng, n: int, sr: int) -> np.ndarray:
    """Impulsive clicks (short decaying bursts) over vinyl-like crackle."""
    m = rng.poisson(rng.uniform(2, 25) * n / sr) + 1
    imp = np.zeros(n)
    imp[rng.integers(0, n, m)] = rng.choice([-1.0, 1.0], m) * rng.lognormal(0.0, 0.7, m)
    length = int(rng.uniform(0.001, 0.006) * sr) + 2
    kernel = rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 4))
    burst = oaconvolve(imp, kernel)[:n]
    c = rng.binomial(n, rng.uniform(0.0005, 0.005)) + 1
    crackle = np.zeros(n)
    crackle[rng.integers(0, n, c)] = rng.laplace(size=c)
    crackle = lfilter([1.0, -1.0], [1.0, -0.5], crackle)
    return unit_rms(burst) + db_to_gain(rng.uniform(-15, -3)) * unit_rms(crackle)


SOURCES = {"speech": speech, "music": music, "room": room}
NOISES = {"white": white, "pink": pink, "brown": brown, "hum": hum,
          "babble": babble, "fan": fan, "clicks": clicks}
