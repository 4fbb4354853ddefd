"""Trainer overhead against a bare PyTorch loop, and peak memory of training at 1x and 4x data.

    python benchmarks/bench_train.py                          # 3000 generated clips (and 12000 for 4x)
    python benchmarks/bench_train.py --n-clips 400 --skip-rss  # tiny epochs: fixed costs show most
    python benchmarks/bench_train.py --data-dir data/default --epochs 2 --repeat 1
    python benchmarks/bench_train.py --quick                   # smoke run: 24 clips, 1 epoch, once, no memory runs

Timing: the same model (student, same seed), data, batch size, AdamW and DistillationLoss, one train
pass and one validation pass per epoch. "bare loop" has no checkpoints, history, plots or progress
bars; the trainer rows add those back one at a time, so the ratios say what each costs
("PNG every epoch" forces a loss_curves.png redraw after each epoch; the default keeps redraws
within 5 % of training time). Rows run
interleaved, `--repeat` times, and the fastest is kept (the machine may be shared).

Memory: each scale trains in a fresh subprocess (features memory-mapped from the FeatureCache) and
reports resource.getrusage ru_maxrss, plus the anonymous / file-backed split of the final RSS from
/proc (file-backed = memmapped feature pages, which the OS can drop; goal: anonymous memory flat).
Memory always uses generated data (--n-clips and 4x that).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import quick  # noqa: E402  (benchmarks/quick.py)
from procmem import reset_peak_rss, status_kb  # noqa: E402  (benchmarks/, this script's folder)

from mark2_lib import train  # noqa: E402
from mark2_lib.builders import synth  # noqa: E402
from mark2_lib.config import AudioConfig, TrainConfig, model_config  # noqa: E402
from mark2_lib.data import (  # noqa: E402
    ClipDataset,
    Dataset,
    FeatureCache,
    SoftLabels,
    collate_clips,
    load_labels,
    load_soft_labels,
)
from mark2_lib.losses import DistillationLoss  # noqa: E402
from mark2_lib.models import ClipClassifier  # noqa: E402

# --quick: a few seconds end to end (the tests run it); options given explicitly still win. The two
# memory runs (a fresh process each, ~10 s of imports) are left out unless --no-skip-rss.
QUICK = dict(n_clips=24, epochs=1, rss_epochs=1, batch_size=16, repeat=1, threads=1, skip_rss=True)


def open_data(data_dir: Path, cache_dir: Path, cfg: AudioConfig):
    """(manifest, memmapped features, soft labels): soft_labels.csv, else the synthetic annotator's P(noise)."""
    manifest = load_labels(data_dir / "labels.csv", check_audio=False, sample_rate=cfg.sample_rate)
    with contextlib.redirect_stdout(io.StringIO()):
        features = FeatureCache(cache_dir, cfg).features(manifest, progress=False)
    if (data_dir / "soft_labels.csv").is_file():
        soft = load_soft_labels(data_dir / "soft_labels.csv", manifest)
    elif (data_dir / "truth.csv").is_file():
        truth = pd.read_csv(data_dir / "truth.csv").set_index("clip_id")["p_noise_annotator"]
        soft = SoftLabels(clip={c: np.array([1 - truth[c], truth[c]]) for c in manifest.clip_ids})
    else:
        soft = None
    return manifest, features, soft


def bare_loop(manifest, features, soft, cfg: TrainConfig, audio_cfg, epochs: int) -> float:
    """Seconds per epoch of a plain loop: DataLoader, AdamW, DistillationLoss, train + val pass."""
    train.seed_everything(cfg.seed)
    model = ClipClassifier(audio_cfg, model_config("student"))
    train_set = ClipDataset(manifest.split("train"), features, soft)
    val_set = ClipDataset(manifest.split("val"), features, soft)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = DistillationLoss(cfg.alpha, cfg.temperature)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(epoch)
        model.train()
        for b in torch.utils.data.DataLoader(train_set, cfg.batch_size, shuffle=True, generator=gen,
                                             collate_fn=collate_clips):
            logits, _ = model(b["features"], b["segment_mask"])
            loss = loss_fn(logits, b["soft_clip"], b["label"], soft_mask=b["soft_clip_mask"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for b in torch.utils.data.DataLoader(val_set, cfg.batch_size, collate_fn=collate_clips):
                logits, _ = model(b["features"], b["segment_mask"])
                loss_fn(logits, b["soft_clip"], b["label"], soft_mask=b["soft_clip_mask"]).item()
    return (time.perf_counter() - t0) / epochs


def trainer(manifest, features, soft, cfg: TrainConfig, audio_cfg, run_dir: Path,
            plots: bool = True) -> tuple[float, float]:
    """(wall seconds per epoch of train_run, mean of history.csv's `seconds`: the train + val passes only)."""
    import mark2_lib.plots as plots_mod

    class NoCurves:  # stands in for plots.LossCurves: no figure at all
        def __init__(self, *a, **k): pass
        def update(self, history): pass
        def save(self, path, dpi=80): pass

    real_curves = plots_mod.LossCurves
    if not plots:
        plots_mod.LossCurves = NoCurves
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # tqdm bars (their cost is still paid)
            t0 = time.perf_counter()
            result = train.train_run(run_dir, Dataset(manifest, features, soft), cfg, audio_cfg,
                                     model_config("student"), resume=False)
            wall = time.perf_counter() - t0
    finally:
        plots_mod.LossCurves = real_curves
    h = pd.read_csv(run_dir / "history.csv")
    return wall / result["epochs_run"], float(h["seconds"].mean())


def output_costs(run_dir: Path, repeat: int) -> dict[str, float]:
    """Seconds per epoch of each thing the trainer writes after an epoch, on a finished run's files."""
    from mark2_lib.atomic import atomic_save, atomic_write_text
    from mark2_lib.plots import LossCurves

    state = torch.load(run_dir / "last.pt", weights_only=True)
    df = pd.read_csv(run_dir / "history.csv")
    jobs = {"last.pt checkpoint": lambda: atomic_save(state, run_dir / "bench_last.pt"),
            "history.csv": lambda: atomic_write_text(df.to_csv(index=False, float_format="%.6g"),
                                                     run_dir / "bench_history.csv"),
            "loss_curves.png": lambda: curves.update(df) and curves.save(run_dir / "bench_loss.png")}
    curves = LossCurves(title="bench", pyplot=False)  # the trainer reuses one figure per run
    out = {}
    for name, job in jobs.items():
        times = []
        for _ in range(repeat + 1):
            t0 = time.perf_counter()
            job()
            times.append(time.perf_counter() - t0)
        out[name] = min(times[1:])
    return out


def rss_child(args) -> None:
    """Train on one data folder in this (fresh) process; print RSS figures (kB) as JSON.

    The high-water mark is reset (Linux /proc/self/clear_refs) after imports and data loading, so
    ru_maxrss then is the peak *during training*; without the reset it would be the import peak.
    """
    torch.set_num_threads(args.threads)
    cfg = AudioConfig()
    manifest, features, soft = open_data(args.data_dir, args.cache_dir, cfg)
    tcfg = TrainConfig(epochs=args.epochs, patience=10**6, batch_size=args.batch_size, progress=False)
    reset = reset_peak_rss()  # ru_maxrss := current RSS
    before = status_kb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    train.train_run(args.run_dir, Dataset(manifest, features, soft), tcfg, cfg, model_config("student"),
                    resume=False)
    print(json.dumps({"clips": len(manifest), "before_kb": before, "reset": reset,
                      "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "anon_kb": status_kb("RssAnon"), "file_kb": status_kb("RssFile"),
                      "feature_mb": sum(x.nbytes for x in features.values()) / 2**20}))


def measure_rss(data_dir: Path, cache_dir: Path, run_dir: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--rss-child", "--data-dir", str(data_dir), "--cache-dir", str(cache_dir),
           "--run-dir", str(run_dir), "--epochs", str(args.rss_epochs), "--batch-size", str(args.batch_size),
           "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "MPLBACKEND": "Agg"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, help="folder with labels.csv for the timing rows (default: generate)")
    ap.add_argument("--n-clips", type=int, default=3000,
                    help="generated clips for 1x (default 3000, the workbook's data: 1,500 train clips; 4x = 4 times)")
    ap.add_argument("--epochs", type=int, default=10, help="epochs per timing row (default 10)")
    ap.add_argument("--rss-epochs", type=int, default=2, help="epochs per memory run (default 2)")
    ap.add_argument("--batch-size", type=int, default=64, help="clips per batch (default 64, TrainConfig's)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per timing row; the fastest is kept (default 2)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    ap.add_argument("--skip-rss", action=argparse.BooleanOptionalAction, default=False,
                    help="timing rows only (--quick implies it; --no-skip-rss adds the memory runs back)")
    ap.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    args = quick.parse_args(ap, argv, QUICK)
    if args.rss_child:
        return rss_child(args)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("MPLBACKEND", "Agg")
    cfg = AudioConfig()
    with tempfile.TemporaryDirectory(prefix="mark2_bench_train_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        gen = lambda n: synth.make_default_dataset(tmp / f"synth_{n}", n_clips=n, seed=0, progress=False)  # noqa: E731
        data_dir = args.data_dir or gen(args.n_clips)
        manifest, features, soft = open_data(data_dir, tmp / "cache", cfg)
        n_train, n_val = len(manifest.split("train")), len(manifest.split("val"))
        segs = sum(features[c].shape[0] for c in manifest.clip_ids)
        print(f"data: {len(manifest)} clips ({n_train} train, {n_val} val, {segs} segments) from {data_dir} "
              f"[{time.perf_counter() - t0:.0f} s to prepare]")
        tcfg = dict(epochs=args.epochs, patience=10**6, batch_size=args.batch_size, seed=0)
        rows = {"bare loop (no checkpoints/plots/tqdm)": [],
                "train_run, progress=False, no PNG": [],
                "train_run, progress=False, PNG every epoch": [],
                "train_run, progress=False": [],
                "train_run, defaults (tqdm on)": []}
        inner = {k: [] for k in rows}
        bare_loop(manifest, features, soft, TrainConfig(**tcfg), cfg, 1)  # warm-up
        for r in range(args.repeat):
            for name in rows:
                run = tmp / "runs" / f"{len(inner[name])}_{abs(hash(name))}"
                if name.startswith("bare"):
                    rows[name].append(bare_loop(manifest, features, soft, TrainConfig(**tcfg), cfg, args.epochs))
                    continue
                c = TrainConfig(**tcfg, progress="defaults" in name,
                                      curves_budget=1.0 if "every epoch" in name else 0.05)
                wall, passes = trainer(manifest, features, soft, c, cfg, run, plots="no PNG" not in name)
                rows[name].append(wall)
                inner[name].append(passes)
        base = min(rows["bare loop (no checkpoints/plots/tqdm)"])
        print(f"\n{'per epoch (train + val pass)':<44}{'s/epoch':>9}{'vs bare':>9}{'passes only':>13}")
        for name, times in rows.items():
            passes = f"{min(inner[name]):.3f}" if inner[name] else ""
            print(f"{name:<44}{min(times):>9.3f}{min(times) / base:>8.2f}x{passes:>13}")
        print("'passes only' = history.csv's seconds column (train + val passes, before checkpoint/history/PNG)")
        last_run = max((tmp / "runs").glob("*"), key=lambda p: p.stat().st_mtime)
        print("\nwritten after every epoch (s each):  " + ",  ".join(
            f"{k} {v:.3f}" for k, v in output_costs(last_run, args.repeat).items()))

        if not args.skip_rss:
            print(f"\npeak RSS during training ({args.rss_epochs} epochs, fresh process each, features memory-mapped; "
                  f"before = RSS after imports + data, anon/file = RSS split at the end)")
            print(f"{'scale':<7}{'clips':>7}{'features MB':>13}{'before MB':>11}{'peak MB':>9}{'peak-before':>13}"
                  f"{'anon MB':>9}{'file MB':>9}")
            res = {}
            for scale in (1, 4):
                n = args.n_clips * scale
                d = gen(n)
                with contextlib.redirect_stdout(io.StringIO()):  # compute the cache here, not in the child
                    FeatureCache(tmp / "cache", cfg).features(load_labels(d / "labels.csv", check_audio=False),
                                                              progress=False)
                res[scale] = m = measure_rss(d, tmp / "cache", tmp / "runs" / f"rss_{scale}", args)
                print(f"{str(scale) + 'x':<7}{m['clips']:>7}{m['feature_mb']:>13.1f}{m['before_kb'] / 1024:>11.0f}"
                      f"{m['peak_kb'] / 1024:>9.0f}{(m['peak_kb'] - m['before_kb']) / 1024:>13.0f}"
                      f"{m['anon_kb'] / 1024:>9.0f}{m['file_kb'] / 1024:>9.0f}")
            print(f"4x/1x peak RSS: {res[4]['peak_kb'] / res[1]['peak_kb']:.2f}x, "
                  f"anonymous: {res[4]['anon_kb'] / res[1]['anon_kb']:.2f}x")
    print(f"\ntorch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs, batch {args.batch_size}, "
          f"{args.epochs} epochs per timing row, best of {args.repeat}")
    print("reproduce: python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + (argv or sys.argv[1:])))


if __name__ == "__main__":
    main()
