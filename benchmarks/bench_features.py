"""Throughput of the feature pipeline (load -> resample -> segment -> log-mel), cold and cached.

    python benchmarks/bench_features.py                       # 200 generated 2 s clips
    python benchmarks/bench_features.py --data-dir data/default --threads 1 2
    python benchmarks/bench_features.py --quick                # smoke run: 8 clips of 1 s, 1 thread, once

Reports hours of audio processed per second of wall time (best of --repeat runs). The audio files sit in the OS
page cache in every row (they were just written or read), so "cold" measures decoding
and compute rather than the disk.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import quick  # noqa: E402  (benchmarks/quick.py)

from mark2_lib import audio, data  # noqa: E402
from mark2_lib.config import AudioConfig  # noqa: E402

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}
# --quick: a few seconds end to end (the tests run it); options given explicitly still win
QUICK = dict(n_files=8, seconds=1.0, repeat=1, threads=[1])


def make_clips(folder: Path, n_files: int, seconds: float, seed: int = 0) -> Path:
    """Half 44.1 kHz stereo, half 16 kHz mono noise clips, plus a labels.csv."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_files):
        sr, channels = (44100, 2) if i % 2 == 0 else (16000, 1)
        x = rng.normal(0, 0.1, (int(seconds * sr), channels)).astype(np.float32)
        name = f"audio/b{i:04d}_{sr}_{channels}ch.wav"
        (folder / "audio").mkdir(parents=True, exist_ok=True)
        sf.write(str(folder / name), x, sr, subtype="PCM_16")
        rows.append(f"b{i:04d},{name},{i % 4 // 2}")
    (folder / "labels.csv").write_text("clip_id,path,label\n" + "\n".join(rows) + "\n")
    return folder / "labels.csv"


def manifest_for(folder: Path) -> data.Manifest:
    """The folder's labels.csv, or else every audio file under it."""
    if (folder / "labels.csv").is_file():
        return data.load_labels(folder / "labels.csv", check_audio=False)
    paths = sorted(str(p.resolve()) for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not paths:
        sys.exit(f"no labels.csv and no audio files under {folder}")
    df = pd.DataFrame({"clip_id": [str(i) for i in range(len(paths))], "path": paths, "label": 0,
                       "split": "train", "row": range(2, len(paths) + 2)})
    return data.Manifest(folder.resolve(), df)


def stages(paths: list[str], cfg: AudioConfig) -> dict[str, float]:
    """Seconds spent in each stage over all files, without the cache."""
    logmel, t = audio.LogMel(cfg), dict.fromkeys(["read + mono", "resample", "segment + log-mel"], 0.0)
    for p in paths:
        t0 = time.perf_counter()
        x, sr = sf.read(p, dtype="float32", always_2d=True)
        wave = torch.from_numpy(x.mean(axis=1))
        t1 = time.perf_counter()
        wave = audio.resample(wave, sr, cfg.sample_rate)
        t2 = time.perf_counter()
        audio.clip_features(wave, cfg, logmel)
        t3 = time.perf_counter()
        t["read + mono"] += t1 - t0
        t["resample"] += t2 - t1
        t["segment + log-mel"] += t3 - t2
    return t


def through_cache(manifest: data.Manifest, cache: data.FeatureCache) -> float:
    """Seconds to get every clip's features as in-memory arrays via the cache (hashing included)."""
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the "N of M clips cached" line
        feats = cache.features(manifest, progress=False)
    for x in feats.values():
        np.array(x)  # what ClipDataset does per item
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, help="folder with labels.csv (or just audio files); default: generate")
    ap.add_argument("--n-files", type=int, default=200, help="clips to generate (default 200)")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each generated clip (default 2)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the fastest is shown (default 3)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (default 1 2)")
    args = quick.parse_args(ap, argv, QUICK)
    cfg = AudioConfig()
    with tempfile.TemporaryDirectory(prefix="mark2_bench_") as tmp:
        tmp = Path(tmp)
        folder = args.data_dir or make_clips(tmp / "clips", args.n_files, args.seconds).parent
        manifest = manifest_for(folder)
        paths = manifest.df["path"].tolist()
        hours = sum(sf.info(p).duration for p in paths) / 3600
        print(f"{len(paths)} files, {hours * 3600:.0f} s of audio, from {folder}")
        results = []
        for threads in args.threads:
            torch.set_num_threads(threads)
            stages(paths[:4], cfg)  # warm up torch and the resampling kernels
            runs = [stages(paths, cfg) for _ in range(args.repeat)]
            for name in runs[0]:
                results.append((f"{name} / {threads}", min(r[name] for r in runs), None))
            cold, warm = [], []
            for i in range(args.repeat):
                cache = data.FeatureCache(tmp / f"cache_{threads}_{i}", cfg)  # empty
                cold.append(through_cache(manifest, cache))
                warm.append(through_cache(manifest, cache))
            results += [(f"cold cache (all) / {threads}", min(cold), None),
                        (f"warm cache / {threads}", min(warm), min(cold) / min(warm))]
    print()
    print(f"{'stage / torch threads':<28}{'seconds':>9}{'audio h/s':>11}{'warm/cold':>11}")
    for name, seconds, ratio in results:
        print(f"{name:<28}{seconds:>9.3f}{hours / seconds:>11.2f}{f'{ratio:.1f}x' if ratio else '':>11}")
    print(f"\nwarm/cold: throughput of the warm cache over the cold one. torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, {len(paths)} files, {hours * 3600:.0f} s of audio")
    print("reproduce: python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + (argv or sys.argv[1:])))


if __name__ == "__main__":
    main()
