"""Speed of the classical baselines (mark2_lib/baselines.py): STNR and WADA-SNR, numpy, one clip at a time.

    python benchmarks/bench_baselines.py                         # 200 generated 2 s clips (speech + noise)
    python benchmarks/bench_baselines.py --data-dir data/default # the test clips of a data folder
    python benchmarks/bench_baselines.py --quick                 # smoke run: 8 clips of 1 s, one round

Reports seconds of audio estimated per second of wall time ("x real time"), median of --rounds rounds of
`timing.timed_rounds` (the two estimators take turns), with the audio already in memory.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import quick  # noqa: E402  (benchmarks/quick.py)

from mark2_lib import baselines  # noqa: E402
from mark2_lib.builders import signals  # noqa: E402
from mark2_lib.builders.synth import mix_at_snr  # noqa: E402
from mark2_lib.data import load_labels  # noqa: E402
from mark2_lib.timing import timed_rounds  # noqa: E402

SR = 16000
QUICK = dict(n_files=8, seconds=1.0, rounds=1)


def generated(n_files: int, seconds: float, seed: int = 0) -> list[np.ndarray]:
    """Synthetic speech with white noise at 0-30 dB SNR."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    return [mix_at_snr(signals.speech(rng, n, SR), signals.white(rng, n, SR), rng.uniform(0, 30))
            for _ in range(n_files)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, help="folder with labels.csv: its test clips (default: generate)")
    ap.add_argument("--n-files", type=int, default=200, help="clips to generate (default 200)")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each generated clip (default 2)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds; the median is shown (default 5)")
    args = quick.parse_args(ap, argv, QUICK)
    if args.data_dir:
        test = load_labels(args.data_dir / "labels.csv", sample_rate=SR).split("test")
        waves, source = baselines.read_waves(test.df["path"], SR), f"the test clips of {args.data_dir}"
    else:
        waves, source = generated(args.n_files, args.seconds), "generated speech + white noise"
    seconds = sum(len(w) for w in waves) / SR
    print(f"{len(waves)} clips, {seconds:.0f} s of audio, {source}")
    times = timed_rounds({"stnr": lambda: [baselines.stnr_snr(w, SR) for w in waves],
                          "wada": lambda: [baselines.wada_snr(w) for w in waves]}, repeats=args.rounds)
    print(f"\n{'estimator':<12}{'x real time':>14}{'us / s audio':>14}")
    for name, t in times.items():
        median = float(np.median(t))
        print(f"{name:<12}{seconds / median:>13,.0f}x{median / seconds * 1e6:>14.1f}")
    print("reproduce: python " + " ".join(shlex.quote(a) for a in ["benchmarks/bench_baselines.py",
                                                                  *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    main()
