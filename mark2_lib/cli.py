"""Command line: `python -m mark2_lib {make-data,make-real-data,run-notebooks,predict,soft-labels,export} ...`."""
from __future__ import annotations

import argparse
import sys

from .config import MIN_SECONDS, SILENCE_DBFS


def _make_data(args) -> int:
    from .paths import resolve
    from .builders.synth import POOL_SPLIT_SHARES, make_default_dataset

    out = make_default_dataset(resolve(args.out), n_clips=args.n_clips, seed=args.seed)
    print(f"default dataset: {out}")
    if args.teacher_pool_factor > 0:
        pool = make_default_dataset(resolve(args.teacher_pool), n_clips=args.n_clips * args.teacher_pool_factor,
                                    seed=args.seed + 1000, splits=POOL_SPLIT_SHARES)
        print(f"teacher pool:    {pool}")
    return 0


def _make_real_data(args) -> int:
    from .builders.corpus import build_real_corpus
    from .errors import CorpusError
    from .paths import resolve

    try:
        out = build_real_corpus(resolve(args.out), n_clips=args.n_clips, seed=args.seed,
                                clip_seconds=args.clip_seconds, transfer_factor=args.transfer_factor,
                                speaker_seconds=args.speaker_seconds,
                                cache_dir=resolve(args.cache_dir) if args.cache_dir else None,
                                use_dnsmos=False if args.no_dnsmos else None, engine=args.engine, workers=args.workers)
    except CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"real-speech corpus: {out} (sources, verdicts and licences in {out / 'sources.csv'} and "
          f"{out / 'SOURCES.md'})")
    return 0


def _run_notebooks(args) -> int:
    import json

    from .workbook import UndeclaredParameterError, run_all

    common = {}
    for item in args.param or []:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            print(f"error: -p {item!r}: expected NAME=VALUE", file=sys.stderr)
            return 2
        try:
            common[name] = json.loads(value)  # numbers, true/false, lists; anything else is a string
        except ValueError:
            common[name] = value
    try:  # the sliders of 04 need a live browser; headless runs draw the same figures statically
        run_all(out_dir=args.out, timeout=args.timeout, only=args.only or None,
                parameters={"04_explore_alpha_T": {"interactive": False}}, common=common)
    except UndeclaredParameterError as e:  # raised before any notebook runs
        print(f"error: -p {e}", file=sys.stderr)
        return 2
    return 0


def _engine_options(args) -> dict:
    return dict(root=args.root, engine=args.engine, workers=args.workers, shard_size=args.shard_size,
                ray_address=args.ray_address, progress=not args.no_progress)


def _job_failed(e: Exception) -> int:
    """Exit status and message for a job that raised: 2 for bad input or options, 1 when scoring failed."""
    from .jobs.engines import ShardError

    print(f"error: {e}", file=sys.stderr)
    return 1 if isinstance(e, ShardError) else 2


def _predict(args) -> int:
    from .inference.predict import summary_text
    from .jobs.score import predict_job
    from .jobs.engines import ShardError

    try:
        info = predict_job(args.run_dir, args.paths, args.out, segments=args.segments, batch_size=args.batch_size,
                           threshold=args.threshold, min_seconds=args.min_seconds,
                           silence_dbfs=None if args.silence_dbfs is None or args.silence_dbfs <= -200 else args.silence_dbfs,
                           **_engine_options(args))
    except (FileNotFoundError, ValueError, ImportError, ShardError) as e:  # no such run, bad options or inputs
        return _job_failed(e)
    clips = info["clips"]
    print(summary_text(clips), file=sys.stderr)
    print("wrote " + " and ".join(map(str, info["written"])), file=sys.stderr)
    return 1 if (clips["error"] != "").any() else 0


def _soft_labels(args) -> int:
    from .jobs.score import soft_labels_job
    from .jobs.engines import ShardError

    try:
        info = soft_labels_job(args.teacher, args.paths, args.out, segments=args.segments, cache_dir=args.cache_dir,
                               **_engine_options(args))
    except (FileNotFoundError, ValueError, ImportError, ShardError) as e:
        return _job_failed(e)
    n_failed = len(info["errors"])
    lines = [f"{info['n_inputs']} files: {info['n_scored']} labelled by {info['teacher']}, {n_failed} failed"]
    if "a" in info:
        lines.append(f"  DNSMOS: {info['n_cached']} from the cache; Platt fit on the train split: "
                     f"p_noise = sigmoid({info['a']:.3f} * BAK + {info['b']:.3f})")
    print("\n".join(lines), file=sys.stderr)
    print(f"wrote {info['path']}", file=sys.stderr)
    return 1 if n_failed else 0


def _add_engine_options(p) -> None:
    from .jobs.engines import ENGINES

    g = p.add_argument_group("corpus-scale options (sharded, resumable: finished shards are kept in <out>.parts/ "
                             "until the output is written, and a rerun of the same command skips them)")
    g.add_argument("--root", default=None, help="clip ids are paths relative to this folder (default: as given)")
    g.add_argument("--engine", choices=ENGINES, default="local",
                   help="serial: this process; local: a process per core (default); ray: Ray Data actors")
    g.add_argument("--workers", type=int, default=None, help="worker processes / actors (default: every core)")
    g.add_argument("--shard-size", type=int, default=64, help="files per shard (default 64)")
    g.add_argument("--ray-address", default=None,
                   help="Ray cluster to join, e.g. 'auto' or HOST:PORT (default: start a local Ray)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


INPUTS_HELP = ("inputs: folders (recursed), audio files, file lists (.txt), labels.csv, or JSON-lines manifests "
               "(.jsonl: audio_filepath, optional duration and any other fields, kept in a .jsonl output)")


def _export(args) -> int:
    from .inference.export import FORMATS, export_format, export_run
    from .inference.onnx_export import ExportCheckError

    fmt = args.format
    out = args.out if args.out is not None else f"student{FORMATS[fmt or 'torchscript'][0]}"
    try:
        fmt = export_format(out, fmt)
        out = export_run(args.run_dir, out, fmt)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ExportCheckError as e:  # the ONNX file disagrees with the PyTorch model: not written
        print(f"error: {e}", file=sys.stderr)
        return 1
    if fmt == "onnx":
        from .inference.onnx_model import OnnxClassifier

        model = OnnxClassifier(out)  # read back: the file loads
        print(f"wrote {out}: ONNX, waveform [B, samples] at sample_rate={model.sample_rate} Hz -> clip logits "
              f"[B, 2] (index 1 = noise); checked in ONNX Runtime against PyTorch")
        return 0
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        sample_rate = torch.jit.load(str(out)).sample_rate  # read back: the file loads
    print(f"wrote {out}: waveform [B, samples] at sample_rate={sample_rate} Hz -> clip logits [B, 2] "
          f"(index 1 = noise)")
    return 0


def main(argv=None) -> int:
    """Parse `argv` (default: the command line) and run its subcommand; returns the exit status."""
    from .paths import DEFAULT_DATA, DEFAULT_TEACHER_POOL
    from .config import REAL_N_CLIPS, REAL_SPEAKER_SECONDS, REAL_TRANSFER_FACTOR

    parser = argparse.ArgumentParser(prog="python -m mark2_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-data", help="generate the built-in default dataset (and the teacher's pool)")
    p.add_argument("--out", default=DEFAULT_DATA, help="output folder (relative to the repository)")
    p.add_argument("--n-clips", type=int, default=3000, help="clips in the student dataset")
    p.add_argument("--seed", type=int, default=0, help="generator seed")
    p.add_argument("--teacher-pool", default=DEFAULT_TEACHER_POOL, help="folder of the teacher's pool")
    p.add_argument("--teacher-pool-factor", type=int, default=3, help="pool size as a multiple of --n-clips (0: none)")
    p.set_defaults(func=_make_data)

    p = sub.add_parser("make-real-data", help="build the real-speech corpus from Debian packages (apt-get download)")
    p.add_argument("--out", default="data/real", help="folder: packages/ and clips/ go here")
    p.add_argument("--n-clips", type=int, default=REAL_N_CLIPS, help="labelled clips to mix (half train)")
    p.add_argument("--transfer-factor", type=float, default=REAL_TRANSFER_FACTOR,
                   help="unlabelled train clips (transfer set) as a multiple of the labelled train split; 0: none")
    p.add_argument("--speaker-seconds", type=float, default=REAL_SPEAKER_SECONDS,
                   help="seconds of source speech screened per speaker group")
    p.add_argument("--seed", type=int, default=0, help="mixing seed")
    p.add_argument("--clip-seconds", type=float, default=2.0, help="length of each clip")
    p.add_argument("--cache-dir", default=None, help="DNSMOS score cache (default data/cache, as notebook 02)")
    p.add_argument("--no-dnsmos", action="store_true", help="screen with signal checks and a blind SNR only")
    p.add_argument("--engine", default="local", choices=("serial", "local", "ray"),
                   help="where DNSMOS scores the sources (local: a process per core)")
    p.add_argument("--workers", type=int, default=None, help="processes (local) or actors (ray); default: cores")
    p.set_defaults(func=_make_real_data)

    p = sub.add_parser("run-notebooks", help="execute the numbered notebooks with papermill")
    p.add_argument("--out", default=None, help="folder for executed copies (default runs/executed)")
    p.add_argument("--timeout", type=int, default=900, help="per-cell timeout, seconds")
    p.add_argument("--only", nargs="*", help="notebook name prefixes to run, e.g. 01 03")
    p.add_argument("-p", "--param", action="append", metavar="NAME=VALUE",
                   help="a parameter for every notebook that declares it (JSON value, else a string); repeatable")
    p.set_defaults(func=_run_notebooks)

    p = sub.add_parser(
        "predict", help="score audio files and folders with a trained run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score audio files (and folders, recursed) with a trained run; long files are streamed.",
        epilog="""output:
  --out CSV             one row per file: path, p_noise, label (clean|noise|silent), n_segments, error
                        (error is empty for scored files; for a missing, empty, unreadable,
                        truncated or NaN/inf file, or one shorter than --min-seconds, it holds
                        the message and the score is empty; a file whose peak stays below
                        --silence-dbfs is labelled silent, with p_noise empty)
  <out stem>_segments.csv  with --segments, one row per segment: path, segment (0-based),
                        start_s, end_s (seconds, end clipped to the file's length), p_noise, label
  .jsonl instead of .csv: one line per input, its fields (a manifest's) then clip_id and the columns
audio files in folders: .wav .flac .ogg .mp3 .aiff .aif .opus (any case); other rates and
stereo are resampled / mixed to mono. A summary goes to stderr; the exit status is 1 when any
file failed, 2 when the run folder or an option is bad.""")
    p.add_argument("run_dir", help="training run folder (config.json, encoder.pt, head.pt), or its ONNX export "
                   "(.onnx, from `export --format onnx`; run in ONNX Runtime)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="audio files or folders, file lists, labels.csv, "
                   "JSON-lines manifests")
    p.add_argument("--out", default="predictions.csv",
                   help="clip-level .csv (default predictions.csv), or .jsonl keeping every input field")
    p.add_argument("--segments", action="store_true", help="also write <out stem>_segments.csv")
    p.add_argument("--batch-size", type=int, default=64, help="segments per forward pass (default 64)")
    p.add_argument("--threshold", type=float, default=0.5, help="label 'noise' when p_noise >= this")
    p.add_argument("--min-seconds", type=float, default=MIN_SECONDS,
                   help=f"shorter files get an error row, not a score (default {MIN_SECONDS:g}; 0 scores every file)")
    p.add_argument("--silence-dbfs", type=float, default=SILENCE_DBFS,
                   help=f"a file whose peak stays below this many dB full scale is labelled 'silent', with no "
                        f"p_noise (default {SILENCE_DBFS:g}; -200 turns it off)")
    _add_engine_options(p)
    p.set_defaults(func=_predict)

    p = sub.add_parser(
        "soft-labels", help="label a corpus with a teacher: DNSMOS, a trained run or a TorchScript model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Soft labels for every input clip, by DNSMOS (Platt-calibrated on the train split's hard "
                    "labels), a trained run folder, or a TorchScript teacher (.ts/.pt: waveform [B, samples] -> "
                    "logits [B, 2]).",
        epilog=f"""{INPUTS_HELP}
output, by the extension of --out:
  .csv     soft_labels.csv (clip_id, segment, teacher, p_clean, p_noise): a whole-clip row per clip,
           and with --segments a row per segment; clips that fail get no row and are listed
  .jsonl   one line per input: its fields, then clip_id, p_clean, p_noise, teacher (DNSMOS: sig,
           bak, ovr too; --segments: segment_p_noise) and error
DNSMOS needs the train split's hard labels (labels.csv, or manifest fields "split" and "label").
The exit status is 1 when any file failed, 2 when the teacher, an input or an option is bad.""")
    p.add_argument("--teacher", required=True, help="'dnsmos', a trained run folder, or a TorchScript file")
    p.add_argument("paths", nargs="+", metavar="INPUT", help="what to label (see below)")
    p.add_argument("--out", default="soft_labels.csv", help="soft_labels.csv (default), or a .jsonl")
    p.add_argument("--segments", action="store_true", help="also label each segment (1 s windows every 0.5 s)")
    p.add_argument("--cache-dir", default=None, help="DNSMOS score cache (default data/cache, as notebook 02)")
    _add_engine_options(p)
    p.set_defaults(func=_soft_labels)

    p = sub.add_parser("export", help="write a run as an ONNX or TorchScript model (waveform in, clip logits out)",
                       description="Write a trained run as one model, front end included: waveform [B, samples] at "
                                   "the run's sample rate -> clip logits [B, 2] (index 1 = noise). ONNX needs the "
                                   "onnx extra; the export is checked in ONNX Runtime against PyTorch (max "
                                   "|difference in p_noise| 1e-4) and nothing is written when it fails.")
    p.add_argument("run_dir", help="training run folder")
    p.add_argument("--format", choices=["onnx", "torchscript"], default=None,
                   help="default: from the extension of --out (.onnx; .ts or .pt), torchscript without --out")
    p.add_argument("--out", default=None, help="output file (default student.ts, or student.onnx with --format onnx)")
    p.set_defaults(func=_export)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
