"""What the student's encoder options cost: level norm and stats pooling on and off, side by side in one run.

    python benchmarks/bench_student_options.py                 # 10 min of default-data audio, 2 threads
    python benchmarks/bench_student_options.py --threads 1 --rounds 11
    python benchmarks/bench_student_options.py --quick         # smoke run: 10 s of audio, 1 thread, one round

Untrained students (speed does not depend on the weights), eval mode, inference_mode, batches of
`--batch-size` 10 s waveforms (bench_inference.make_audio). Per round every variant runs, in turn:

  end to end   WaveformClassifier(wave batch) -> clip logits (log-mel + model)
  model        the model alone on the clips' precomputed log-mel frames (clip framing's encoder path + head)

Each timing spans `--passes` passes back to back. The ratio to the previous student (both options
off) is taken per round and its median reported, so a busy machine slows every variant alike.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# --quick: a few seconds end to end (the tests run it); options given explicitly still win
QUICK = dict(minutes=0.1, threads=1, rounds=1, passes=1)

VARIANTS = {  # name: student_config changes
    "previous (both off)": "level_norm=false stats_pooling=false",
    "level norm only": "stats_pooling=false",
    "stats pooling only": "level_norm=false",
    "both (the default)": "",
}


def main(argv=None):
    import quick
    import torch
    from bench_inference import make_audio

    from mark2_lib.config import configure
    from mark2_lib.models import WaveformClassifier, build_model
    from mark2_lib.timing import count_parameters

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="minutes of audio (default 10)")
    p.add_argument("--batch-size", type=int, default=8, help="waveforms per forward pass (default 8)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds; medians are shown (default 7)")
    p.add_argument("--passes", type=int, default=5, help="passes over all the audio per timing (default 5)")
    args = quick.parse_args(p, argv, QUICK)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    waves = torch.from_numpy(make_audio(args.minutes, 10.0)).split(args.batch_size)
    seconds = sum(w.numel() for w in waves) / 16000

    models = {}
    for name, changes in VARIANTS.items():
        cfg, audio = configure("student", changes)
        models[name] = WaveformClassifier(audio, build_model(cfg, audio)).fuse()  # as inference runs it
    first = next(iter(models.values()))
    with torch.inference_mode():
        frames = [first.logmel.clip_frames(w) for w in waves]  # the options do not change the front end

        def end_to_end(m):
            for w in waves:
                m(w)

        def model_only(m):
            for f in frames:
                m.model.head(m.model.flatten(m.model.encoder.forward_clip_frames(f, m.frame_step, m.n_frames)))

        def timed(fn, m) -> float:
            t0 = time.perf_counter()
            for _ in range(args.passes):
                fn(m)
            return (time.perf_counter() - t0) / args.passes

        for m in models.values():  # warm-up
            end_to_end(m), model_only(m)
        times = {(n, k): [] for n in models for k in ("e2e", "model")}
        for _ in range(args.rounds):
            for name, m in models.items():
                times[name, "e2e"].append(timed(end_to_end, m))
                times[name, "model"].append(timed(model_only, m))

    base = next(iter(models))
    print(f"\n{seconds:.0f} s of audio, batches of {args.batch_size}, {args.threads} thread(s), "
          f"median of {args.rounds} rounds of {args.passes} passes")
    print(f"{'student':<22}{'params':>8}{'end to end':>14}{'model only':>14}{'e2e vs previous':>17}"
          f"{'model vs previous':>19}")
    for name, m in models.items():
        rel = {k: statistics.median(b / t for b, t in zip(times[base, k], times[name, k])) for k in ("e2e", "model")}
        print(f"{name:<22}{count_parameters(m.model):>8,}"
              f"{seconds / statistics.median(times[name, 'e2e']):>13.0f}x"
              f"{seconds / statistics.median(times[name, 'model']):>13.0f}x"
              f"{rel['e2e']:>16.2f}x{rel['model']:>18.2f}x")
    print("vs previous: the previous student's time over this one's, per round (below 1 = slower)")
    print(f"reproduce: python benchmarks/bench_student_options.py --threads {args.threads} --rounds {args.rounds}"
          + (" --quick" if args.quick else ""))


if __name__ == "__main__":
    main()
