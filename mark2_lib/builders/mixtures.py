"""Mixtures of real recordings: clean speech + recorded, synthetic or babble noise at drawn SNRs,
labelled with the default data's annotator model and split by speaker (`make_mixture_dataset`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly
from tqdm.auto import tqdm

from ..audio import read_audio
from ..errors import DataError
from .common import deal_splits, finish_build, is_built, start_build, write_csv, write_labels, write_wav
from .signals import NOISES, add_mic_floor, db_to_gain, unit_rms
from .synth import ANNOTATOR, NOISE_TYPES, PEAK_RANGE_DBFS, P_NO_NOISE, SNR_RANGE_DB, annotator_p_noise, mix_at_snr

MIXTURE_MARKER = ".mark2-mixture"  # marks a folder make_mixture_dataset built
MIXTURE_PARAMS_FILE = "mixture.json"  # the parameters of a complete build (written last)
MIXTURE_VERSION = 1
# (split, share) for val and test, of speakers (groups) and of clips; the rest is train
MIXTURE_SPLIT_SHARES = (("val", 0.15), ("test", 0.15))
NOISE_KINDS = (("recorded", 0.5), ("synthetic", 0.3), ("babble", 0.2))  # noise source of a noisy clip
SYNTHETIC_NOISES = ("white", "pink", "brown", "hum")
GAP_SECONDS = (0.05, 0.25)  # pause between two recordings joined into one clean clip


def read_recording(path, sample_rate: int) -> np.ndarray:
    """A recording as mono float64 at `sample_rate` (`audio.read_audio`, then polyphase resampling).

    DataError names the file when it cannot be read (see `read_audio`) or is empty, silent or non-finite.
    """
    x, sr = read_audio(path, dtype="float64")
    if sr != sample_rate:
        g = math.gcd(int(sr), int(sample_rate))
        x = resample_poly(x, sample_rate // g, sr // g)
    if not len(x) or not np.isfinite(x).all() or not np.any(x):
        raise DataError(f"{path}: empty, silent or non-finite audio")
    return x


def trim_silence(x: np.ndarray, sr: int, floor_db: float = -40.0) -> np.ndarray:
    """Drop leading and trailing 10 ms frames more than `floor_db` below the loudest frame."""
    hop = max(sr // 100, 1)
    n = len(x) // hop
    if n < 2:
        return x
    energy = np.mean(x[:n * hop].reshape(n, hop) ** 2, axis=1)
    loud = np.flatnonzero(energy >= energy.max() * 10 ** (floor_db / 10))
    return x[loud[0] * hop:(loud[-1] + 1) * hop]


def split_groups(groups, seed: int) -> dict[str, str]:
    """Put each speaker (or source file) wholly into train, val or test: about 15 % of groups each to val and test."""
    names = sorted(set(groups))
    if len(names) < 3:
        raise ValueError(f"need at least 3 speakers or source files to split by speaker, got {len(names)}")
    order = [names[i] for i in np.random.default_rng([seed, 1]).permutation(len(names))]
    dealt = deal_splits(len(names), MIXTURE_SPLIT_SHARES, at_least=1)
    if "train" not in dealt:
        raise ValueError(f"{len(names)} speakers leave none for train; add speakers or source files")
    return dict(zip(order, dealt))


class _Recordings:
    """Decoded, silence-trimmed recordings, loaded once per build."""

    def __init__(self, sample_rate: int):
        self.sample_rate, self._cache = sample_rate, {}

    def __call__(self, path, trim: bool = True) -> np.ndarray:
        key = (str(path), trim)
        if key not in self._cache:
            x = read_recording(path, self.sample_rate)
            self._cache[key] = trim_silence(x, self.sample_rate) if trim else x
        return self._cache[key]


def _talker(rng, files: list, n: int, sr: int, load) -> tuple[np.ndarray, list]:
    """n samples of one speaker: their recordings in random order at even levels, with short pauses."""
    out, used, pos = np.zeros(n), [], 0
    while pos < n:
        f = files[rng.integers(len(files))]
        x = load(f)
        room = n - pos
        if len(x) > room:
            start = int(rng.integers(0, len(x) - room + 1))
            x = x[start:start + room]
        out[pos:pos + len(x)] = db_to_gain(rng.uniform(-3, 0)) * unit_rms(x)
        used.append(f)
        pos += len(x) + int(rng.uniform(*GAP_SECONDS) * sr)
    return out, used


def _recorded_noise(rng, path, n: int, load) -> np.ndarray:
    """n samples of a noise recording from a random offset, looped when it is shorter."""
    x = load(path, trim=False)
    start = int(rng.integers(len(x)))
    return np.resize(np.roll(x, -start), n)


def _mix_clip(rng, speaker: str, others: list, by_speaker: dict, noise: dict, rel: dict, n: int, sr: int, load,
              snr_range, synthetic_noises, babble: bool):
    """One clip of `speaker` (babble from `others`): (waveform, files used, noise type, noise source, snr, p_noise)."""
    clean, used = _talker(rng, by_speaker[speaker], n, sr, load)
    clean = add_mic_floor(rng, clean)
    kinds = [(k, p) for k, p in NOISE_KINDS if (k != "recorded" or noise)
             and (k != "synthetic" or synthetic_noises) and (k != "babble" or (babble and len(others) >= 3))]
    noise_type, noise_src, snr = "none", "", math.nan
    if kinds and rng.random() >= P_NO_NOISE:
        kind = kinds[rng.choice(len(kinds), p=np.array([p for _, p in kinds]) / sum(p for _, p in kinds))][0]
        if kind == "recorded":
            path = sorted(noise, key=rel.get)[rng.integers(len(noise))]
            noise_type, noise_src, sig = noise[path], rel[path], _recorded_noise(rng, path, n, load)
        elif kind == "synthetic":
            noise_type = noise_src = synthetic_noises[rng.integers(len(synthetic_noises))]
            sig = NOISES[noise_type](rng, n, sr)
        else:
            talkers = [others[j] for j in rng.choice(len(others), size=min(int(rng.integers(4, 7)), len(others)),
                                                     replace=False)]
            sig = sum(db_to_gain(rng.uniform(-6, 0)) * _talker(rng, by_speaker[t], n, sr, load)[0] for t in talkers)
            noise_type, noise_src = "babble", "+".join(talkers)
        snr = round(float(rng.uniform(*snr_range)), 2)
        clean = mix_at_snr(clean, sig, snr)
    return clean, used, noise_type, noise_src, snr, annotator_p_noise(noise_type, snr)


def make_mixture_dataset(clean_files, noise_files, out_dir, snr_range=SNR_RANGE_DB, seed: int = 0,
                         n_clips: int = 480, clip_seconds: float = 2.0, sample_rate: int = 16000,
                         speakers=None, synthetic_noises=SYNTHETIC_NOISES, babble: bool = True,
                         progress: bool = True, n_transfer: int = 0, clip_shares=MIXTURE_SPLIT_SHARES) -> Path:
    """Mix clean recordings with noise at drawn SNRs, label them with the annotator model, split by speaker.

    `clean_files`: audio paths; `speakers` (same length) names each file's speaker, else every file is
    its own group. `noise_files`: paths, or a mapping path -> annotator noise class (one of NOISE_TYPES;
    default "fan"). A noisy clip's noise is a recording, a synthetic noise or babble of 4-6 other
    speakers of the same split. Train, val and test never share a speaker. `clip_shares` deals the
    `n_clips` labelled clips to val and test (the rest to train). `n_transfer` more clips, mixed the
    same way from the train speakers only, form a transfer set: split train, no label in labels.csv
    (truth.csv keeps their noise, SNR and p_noise_annotator). Writes audio/*.wav, labels.csv, truth.csv
    and mixture.json; clip i depends only on (seed, i) and the inputs.
    """
    out_dir, clean_files = Path(out_dir), [str(f) for f in clean_files]
    noise = dict(noise_files) if isinstance(noise_files, dict) else {f: "fan" for f in noise_files}
    noise = {str(f): c for f, c in noise.items()}
    speakers = None if speakers is None else [str(s) for s in speakers]
    lo, hi = (float(v) for v in snr_range)
    if not (int(n_clips) >= 1 and int(seed) >= 0 and clip_seconds > 0 and int(sample_rate) >= 8000 and lo <= hi
            and int(n_transfer) >= 0):
        raise ValueError("need n_clips >= 1, n_transfer >= 0, seed >= 0, clip_seconds > 0, sample_rate >= 8000 "
                         "and snr_range (lo, hi)")
    if not clean_files or (speakers is not None and len(speakers) != len(clean_files)):
        raise ValueError(f"need clean files and one speaker per file ({len(clean_files)} files, "
                         f"{len(speakers or [])} speakers)")
    bad = {c for c in noise.values() if c not in ANNOTATOR} | set(synthetic_noises) - set(NOISES)
    if bad:
        raise ValueError(f"unknown noise class(es) {sorted(bad)}; expected some of {NOISE_TYPES}")
    base = os.path.commonpath([os.path.abspath(f) for f in clean_files + list(noise)])
    rel = {f: os.path.relpath(os.path.abspath(f), base) for f in clean_files + list(noise)}  # names in truth.csv
    speakers = [rel[f] for f in clean_files] if speakers is None else speakers
    inputs = sorted((rel[f], s) for f, s in zip(clean_files, speakers)), sorted((rel[f], c) for f, c in noise.items())
    params = {"version": MIXTURE_VERSION, "n_clips": int(n_clips), "seed": int(seed),
              "clip_seconds": float(clip_seconds), "sample_rate": int(sample_rate), "snr_range": [lo, hi],
              "synthetic_noises": list(synthetic_noises), "babble": bool(babble),
              "inputs": hashlib.sha1(json.dumps(inputs).encode()).hexdigest()}
    if int(n_transfer) or tuple(map(tuple, clip_shares)) != MIXTURE_SPLIT_SHARES:
        params.update(n_transfer=int(n_transfer), clip_shares=[list(s) for s in clip_shares])
    if is_built(out_dir, params, MIXTURE_PARAMS_FILE):
        return out_dir
    start_build(out_dir, MIXTURE_MARKER, "mark2_lib.builders.mixtures.make_mixture_dataset", MIXTURE_PARAMS_FILE)
    split_of = split_groups(speakers, seed)
    by_speaker: dict[str, list] = {}
    for f, s in sorted(zip(clean_files, speakers), key=lambda fs: (rel[fs[0]], fs[1])):
        by_speaker.setdefault(s, []).append(f)
    in_split = {sp: sorted(s for s in by_speaker if split_of[s] == sp) for sp in ("train", "val", "test")}
    clip_split = deal_splits(n_clips, tuple(map(tuple, clip_shares)), at_least=0)
    jobs = [(f"m{seed}_c{i:05d}", split, [seed, 2, i]) for i, split in enumerate(clip_split)]
    jobs += [(f"m{seed}_t{i:05d}", "train", [seed, 3, i]) for i in range(int(n_transfer))]
    n, load, rows = int(round(clip_seconds * sample_rate)), _Recordings(sample_rate), []
    for clip_id, split, key in tqdm(jobs, desc="mixing clips", unit="clip", disable=not progress):
        rng = np.random.default_rng(key)
        speaker = in_split[split][rng.integers(len(in_split[split]))]
        others = [s for s in in_split[split] if s != speaker]
        clean, used, noise_type, noise_src, snr, p = _mix_clip(rng, speaker, others, by_speaker, noise, rel, n,
                                                              sample_rate, load, (lo, hi), synthetic_noises, babble)
        label = "noise" if rng.random() < p else "clean"
        x = clean * (db_to_gain(rng.uniform(*PEAK_RANGE_DBFS)) / np.max(np.abs(clean)))
        write_wav(out_dir / "audio" / f"{clip_id}.wav", x, sample_rate)
        rows.append([clip_id, split, "" if key[1] == 3 else label, speaker, "+".join(sorted({rel[f] for f in used})),
                     noise_type, noise_src, "" if math.isnan(snr) else f"{snr:.2f}", f"{p:.6f}"])
    keep = {f"{r[0]}.wav" for r in rows}
    for old in (out_dir / "audio").glob("m*_[ct]*.wav"):  # clips of an earlier, larger build
        if old.name not in keep:
            old.unlink()
    write_labels(out_dir, [(r[0], r[2], r[1]) for r in rows])
    write_csv(out_dir / "truth.csv", ["clip_id", "split", "label", "speaker", "clean_files", "source_type",
                                      "noise_type", "noise_source", "snr_db", "p_noise_annotator"],
              [[r[0], r[1], r[2], r[3], r[4], "speech", *r[5:]] for r in rows])
    return finish_build(out_dir, params, MIXTURE_PARAMS_FILE)
