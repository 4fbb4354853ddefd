"""Inference speed and memory of the student against the teacher, on the same audio, in one run.

    python benchmarks/bench_inference.py                       # 10 min of default-data audio, 1 and 2 threads
    python benchmarks/bench_inference.py --student-run runs/student --teacher-run runs/teacher --threads 2
    python benchmarks/bench_inference.py --threads 2 --student-config channels=32,48,64 n_mels=48  # a bigger student
    python benchmarks/bench_inference.py --quick               # smoke run: 6 s of audio, 1 thread, one round

Audio: `--minutes` of the default dataset's clips (synth.render_clip, 2 s each, seed 0) joined
into `--clip-seconds` waveforms at 16 kHz, generated once and shared by every configuration.
Eval mode, inference_mode, batches of `--batch-size` waveforms, torch.set_num_threads(threads):

  end to end     WaveformClassifier(wave batch) -> clip logits: segmenting + log-mel + model
  features       the front end alone (segment + log-mel)
  model          the model alone on precomputed features (ClipClassifier(features, mask))

Each model runs with its own front end (`config.audio_config(size)`, or the run's config.json):
the student's 32 bands of a 16 ms window every 25 ms, framed once per clip, the teacher's 64 bands of
a 32 ms window every 20 ms, framed per segment. `--student-config FIELD=VALUE ...` times an untrained
student with ModelConfig or AudioConfig fields changed, to see what a larger design would cost.

Each is `--warmup` passes over all the audio, then the median of `--repeat` timed rounds,
reported as x real time (seconds of audio per second of wall time). A pass shorter than
`--min-time` (the student's 10 minutes take ~30 ms) is timed as that many passes back to back,
divided by their number, so that one scheduler hiccup does not decide a round. One subprocess per thread
count times both models with their passes interleaved, so a busy machine slows both alike; the
speed ratio is taken per round (teacher pass / student pass) and its median reported.
Peak memory: a fresh subprocess per (model, threads) runs two end-to-end passes; the RSS
high-water mark over them (reset just before) minus the RSS just before them (model and audio loaded).
Goals on 2 cores: student >= 1000x real time end to end, and >= 10x faster than the teacher.

ONNX: with the `onnx` extra the student is also exported (`onnx_export.onnx_bytes`, checked against PyTorch)
and timed end to end in ONNX Runtime with as many intra-op threads, in the same process and rounds as the
PyTorch student; "vs PyTorch" is the PyTorch student's pass over the ONNX pass, per round, median (above
1: ONNX Runtime is faster). Without the extra those rows are skipped, saying why.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import quick  # noqa: E402  (benchmarks/quick.py)

GOAL_RT, GOAL_RATIO = 1000.0, 10.0
# --quick: a few seconds end to end (the tests run it), every stage and worker still run; explicit options win
QUICK = dict(minutes=0.1, clip_seconds=2.0, threads=[1], warmup=1, repeat=1, min_time=0.0)


def make_audio(minutes: float, clip_seconds: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """`[n_waves, clip_seconds * sr]` float32: consecutive 2 s default-data clips joined end to end."""
    from mark2_lib.builders.synth import render_clip
    from mark2_lib.timing import join_clips

    part, wave_len = int(2 * sample_rate), int(round(clip_seconds * sample_rate))
    n_waves = max(int(round(minutes * 60 * sample_rate)) // wave_len, 1)
    clips = [render_clip(seed, i, part, sample_rate)[1] for i in range(-(-n_waves * wave_len // part))]
    return join_clips(clips, sample_rate, clip_seconds)[:n_waves].numpy()


def load(size: str, run, overrides=None):
    """(fused WaveformClassifier, as inference runs it, and its AudioConfig): a trained run, or an untrained
    build_model(size) with the size's own front end, with `overrides` (`--student-config` items) applied."""
    from mark2_lib.config import configure
    from mark2_lib.models import WaveformClassifier, build_model
    from mark2_lib.run_folders import load_classifier

    if run:
        model = load_classifier(run)
    else:
        net = build_model(*configure(size, overrides or []))
        model = WaveformClassifier(net.audio, net).fuse()
    return model, model.audio


def export_onnx_student(args, path: Path) -> str:
    """Write the student `load` builds (its run, or untrained) to `path` as ONNX, checked in ONNX Runtime against
    PyTorch; returns "" or, without the `onnx` extra, why the ONNX rows are skipped. With an untrained student
    the timing workers load this file, not a build of their own."""
    import json

    import torch

    from mark2_lib.inference import onnx_export
    from mark2_lib.inference.onnx_model import OnnxClassifier

    try:
        onnx_export.require_exporter()
    except ImportError as e:
        return str(e)
    torch.manual_seed(0)
    model, audio_cfg = load("student", args.student_run, args.student_config)
    config = (args.student_run / "config.json").read_text() if args.student_run else json.dumps(
        {"audio": audio_cfg.to_dict(), "model": model.model.config.to_dict()})
    data = onnx_export.onnx_bytes(model, config)
    diff = onnx_export.p_noise_difference(OnnxClassifier(path, model_bytes=data), model,
                                          onnx_export.check_waves(audio_cfg.sample_rate))
    if not diff <= onnx_export.TOLERANCE:
        sys.exit(f"the ONNX student differs from the PyTorch one by {diff:g} in p_noise")
    path.write_bytes(data)
    return ""


def time_worker(args) -> dict:
    """Timings of both models at one thread count, passes interleaved so that both see the same load."""
    import torch

    from mark2_lib.timing import count_parameters, macs_per_second, timed_rounds

    torch.set_num_threads(args.threads[0])
    waves = torch.from_numpy(np.load(args.audio))
    batches = list(waves.split(args.batch_size))
    tasks, out = {}, {}
    if args.onnx:
        from mark2_lib.inference.onnx_model import OnnxClassifier

        session = OnnxClassifier(args.onnx, threads=args.threads[0]).session
        arrays = [b.numpy() for b in batches]
        tasks["onnx", "end_to_end"] = lambda: [session.run(["logits"], {"waveform": a}) for a in arrays]
        out["onnx"] = {"seconds": waves.numel() / int(session.get_modelmeta().custom_metadata_map["sample_rate"])}
    with torch.inference_mode():
        for size, run in (("student", args.student_run), ("teacher", args.teacher_run)):
            torch.manual_seed(0)  # an untrained student: the same weights as the ONNX file's
            model, audio_cfg = load(size, run, args.student_config if size == "student" else None)
            feats = [(model.features(b), torch.ones(b.shape[0], 1, dtype=torch.bool)) for b in batches]
            feats = [(f, m.expand(f.shape[:2]).contiguous()) for f, m in feats]
            tasks[size, "end_to_end"] = lambda m=model: [m(b) for b in batches]
            tasks[size, "features"] = lambda m=model: [m.features(b) for b in batches]
            tasks[size, "model"] = lambda m=model, f=feats: [m.model(*x) for x in f]
            out[size] = {"params": count_parameters(model.model), "seconds": waves.numel() / audio_cfg.sample_rate,
                         "macs_per_s": macs_per_second(model.model, audio_cfg),
                         "front_end": f"{audio_cfg.n_mels} mels x {audio_cfg.n_frames} frames: "
                                      f"{1000 * audio_cfg.win_length / audio_cfg.sample_rate:g} ms windows every "
                                      f"{1000 * audio_cfg.hop_length / audio_cfg.sample_rate:g} ms "
                                      f"(n_fft {audio_cfg.n_fft}), framed per {audio_cfg.framing}"}
        times = timed_rounds(tasks, args.repeat, args.min_time, args.warmup)
    for (size, what), t in times.items():
        out[size][what] = statistics.median(t)
        out[size][what + "_best"] = min(t)
    # the speed ratio per round (a teacher pass over a student pass timed moments apart), then the
    # median: a load change on the machine slows both sides of a round, so it cancels out
    for size in out:
        out[size]["vs_teacher"] = statistics.median(
            t / s for t, s in zip(times["teacher", "end_to_end"], times[size, "end_to_end"]))
    if args.onnx:
        out["onnx"]["vs_pytorch"] = statistics.median(
            p / o for p, o in zip(times["student", "end_to_end"], times["onnx", "end_to_end"]))
    return out


def memory_worker(args) -> dict:
    """Peak RSS rise of end-to-end inference for one model at one thread count (its own process)."""
    import torch

    torch.set_num_threads(args.threads[0])
    model, _ = load(args.size, args.run, args.student_config if args.size == "student" else None)
    batches = list(torch.from_numpy(np.load(args.audio)).split(args.batch_size))
    from procmem import reset_peak_rss, status_kb

    before = status_kb("VmRSS") / 1024
    reset_peak_rss()  # the process peaked higher while importing and loading: measure the passes alone
    with torch.inference_mode():
        for _ in range(2):
            for b in batches:
                model(b)
    peak = status_kb("VmHWM") / 1024
    return {"peak_mb": peak - before, "process_peak_mb": peak}


def run_worker(kind: str, threads: int, audio_path: Path, args, size: str = "") -> dict:
    """Run one worker in a fresh `python` with `threads` torch/OpenMP threads; returns its JSON."""
    cmd = [sys.executable, __file__, "--worker", kind, "--threads", str(threads), "--audio", str(audio_path),
           "--batch-size", str(args.batch_size), "--warmup", str(args.warmup), "--repeat", str(args.repeat),
           "--min-time", str(args.min_time)] + (["--student-config", *args.student_config] if args.student_config else [])
    for flag, value in (("--size", size), ("--student-run", args.student_run), ("--teacher-run", args.teacher_run),
                        ("--onnx", args.onnx if kind == "time" else None),
                        ("--run", args.student_run if size == "student" else args.teacher_run if size else None)):
        if value:
            cmd += [flag, str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"{kind} worker ({size or 'both models'}, {threads} threads) failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="minutes of audio (default 10)")
    ap.add_argument("--clip-seconds", type=float, default=10.0, help="length of each waveform (default 10)")
    ap.add_argument("--batch-size", type=int, default=8, help="waveforms per forward pass (default 8)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (default 1 2)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed passes first (default 2)")
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds; the median is shown (default 5)")
    ap.add_argument("--min-time", type=float, default=0.25,
                    help="seconds each timing spans at least: a model whose pass is shorter runs that many passes "
                         "back to back and the mean is its pass time (default 0.25)")
    ap.add_argument("--student-run", type=Path, help="trained student run folder (default: untrained build_model)")
    ap.add_argument("--teacher-run", type=Path, help="trained teacher run folder (default: untrained build_model)")
    ap.add_argument("--student-config", nargs="+", metavar="FIELD=VALUE",
                    help="untrained student with ModelConfig/AudioConfig fields changed, e.g. channels=32,48,64 n_mels=48")
    # internal: one configuration in a subprocess
    ap.add_argument("--worker", choices=["time", "memory"], help=argparse.SUPPRESS)
    ap.add_argument("--size", help=argparse.SUPPRESS)
    ap.add_argument("--audio", help=argparse.SUPPRESS)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--onnx", help=argparse.SUPPRESS)
    args = quick.parse_args(ap, argv, QUICK)
    if args.student_config and args.student_run:
        ap.error("--student-config builds an untrained student; it cannot be combined with --student-run")
    if args.student_config:  # unknown fields and bad values fail here, before any timing
        from mark2_lib.config import configure

        try:
            configure("student", args.student_config)
        except ValueError as e:
            ap.error(f"--student-config: {e}")
    if args.worker:
        print(json.dumps((time_worker if args.worker == "time" else memory_worker)(args)))
        return

    import torch

    with tempfile.TemporaryDirectory(prefix="mark2_bench_") as tmp:
        audio_path = Path(tmp) / "audio.npy"
        t0 = time.perf_counter()
        waves = make_audio(args.minutes, args.clip_seconds)
        np.save(audio_path, waves)
        print(f"{waves.shape[0]} waveforms x {args.clip_seconds:g} s = {waves.size / 16000:.0f} s of audio "
              f"(generated in {time.perf_counter() - t0:.1f} s); batches of {args.batch_size}", flush=True)
        onnx_path = Path(tmp) / "student.onnx"
        print("  exporting the student to ONNX ...", flush=True)
        onnx_skipped = export_onnx_student(args, onnx_path)
        args.onnx = None if onnx_skipped else onnx_path
        results = {}
        for threads in args.threads:
            print(f"  timing both models on {threads} thread(s) ...", flush=True)
            timing = run_worker("time", threads, audio_path, args)
            for size in ("student", "teacher"):
                print(f"  peak memory of the {size} on {threads} thread(s) ...", flush=True)
                results[size, threads] = {**timing[size], **run_worker("memory", threads, audio_path, args, size)}
            if args.onnx:
                results["onnx", threads] = timing["onnx"]

    print()
    head = (f"{'model':<9}{'threads':>8}{'end to end':>12}{'(best)':>9}{'features':>10}{'model':>9}"
            f"{'vs teacher':>12}{'params':>9}{'MMAC/s':>8}{'peak MB':>9}")
    print(head + "\n" + "-" * len(head))
    for threads in args.threads:
        for size in ("student", "teacher"):
            r = results[size, threads]
            rt = {k: r["seconds"] / r[k] for k in ("end_to_end", "end_to_end_best", "features", "model")}
            best = f"({rt['end_to_end_best']:.0f}x)"
            ratio = f"{r['vs_teacher']:.1f}x"
            print(f"{size:<9}{threads:>8}{rt['end_to_end']:>11.0f}x{best:>9}{rt['features']:>9.0f}x"
                  f"{rt['model']:>8.0f}x{ratio:>12}{r['params']:>9,}{r['macs_per_s'] / 1e6:>8.2f}{r['peak_mb']:>9.1f}")
    for size in ("student", "teacher"):
        print(f"{size} front end: {results[size, args.threads[0]]['front_end']}")
    print()
    if onnx_skipped:
        print(f"ONNX rows skipped: {onnx_skipped}")
    else:
        head = f"{'model':<14}{'threads':>8}{'end to end':>12}{'(best)':>10}{'vs PyTorch':>12}"
        print("the student in ONNX Runtime, timed in the same rounds as the PyTorch student above:")
        print(head + "\n" + "-" * len(head))
        for threads in args.threads:
            r = results["onnx", threads]
            best = f"({r['seconds'] / r['end_to_end_best']:.0f}x)"
            print(f"{'onnx student':<14}{threads:>8}{r['seconds'] / r['end_to_end']:>11.0f}x{best:>10}"
                  f"{r['vs_pytorch']:>11.2f}x")
    if args.student_config:
        print(f"student: untrained, {' '.join(args.student_config)} (--student-config)")
    print(f"\nx real time = seconds of audio per second of wall time: median of {args.repeat} rounds over all "
          f"the audio after {args.warmup} warm-up passes, student and teacher passes interleaved in one process "
          f"per thread count, a pass shorter than {args.min_time:g} s timed as the mean of that many passes "
          "back to back (best = fastest round); features = segment + log-mel only; model = on precomputed "
          "features; vs teacher = the teacher's end-to-end time over this model's in the same round, median over "
          "the rounds, at the same thread count; "
          "MMAC/s = model multiply-accumulates per second of audio (front end excluded); "
          "peak MB = rise of the RSS high-water mark (reset first) over two end-to-end passes, in a fresh process "
          "per model and thread count.")
    for threads in args.threads:
        s, t = results["student", threads], results["teacher", threads]
        ratio = s["vs_teacher"]
        rt = s["seconds"] / s["end_to_end"]
        print(f"{threads} thread(s): student {rt:.0f}x real time end to end "
              f"({'meets' if rt >= GOAL_RT else 'misses'} the {GOAL_RT:.0f}x goal), "
              f"{ratio:.1f}x faster than the teacher ({'meets' if ratio >= GOAL_RATIO else 'misses'} "
              f"the {GOAL_RATIO:.0f}x goal); model only {t['model'] / s['model']:.1f}x, "
              f"front end share of the student's time {s['features'] / s['end_to_end']:.0%}")
    print(f"\ntorch {torch.__version__}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("reproduce: python " + " ".join(shlex.quote(a) for a in
                                         ["benchmarks/bench_inference.py"] + (argv or sys.argv[1:])))


if __name__ == "__main__":
    main()
