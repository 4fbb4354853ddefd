"""Command line: `python -m mark2_lib {make-data,run-notebooks,predict,export} ...`."""
from __future__ import annotations

import argparse
import sys


def _make_data(args) -> int:
    from .paths import DEFAULT_DATA, DEFAULT_TEACHER_POOL, resolve
    from .synth import make_default_dataset

    out = make_default_dataset(resolve(args.out), n_clips=args.n_clips, seed=args.seed)
    print(f"default dataset: {out}")
    if args.teacher_pool_factor > 0:
        pool = make_default_dataset(resolve(args.teacher_pool), n_clips=args.n_clips * args.teacher_pool_factor,
                                    seed=args.seed + 1000)
        print(f"teacher pool:    {pool}")
    return 0


def _run_notebooks(args) -> int:
    from .workbook import run_all

    run_all(out_dir=args.out, timeout=args.timeout, only=args.only or None)
    return 0


def main(argv=None) -> int:
    from .paths import DEFAULT_DATA, DEFAULT_TEACHER_POOL

    parser = argparse.ArgumentParser(prog="python -m mark2_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-data", help="generate the built-in default dataset (and the teacher's pool)")
    p.add_argument("--out", default=DEFAULT_DATA, help="output folder (relative to the repository)")
    p.add_argument("--n-clips", type=int, default=2000, help="clips in the student dataset")
    p.add_argument("--seed", type=int, default=0, help="generator seed")
    p.add_argument("--teacher-pool", default=DEFAULT_TEACHER_POOL, help="folder of the teacher's pool")
    p.add_argument("--teacher-pool-factor", type=int, default=4, help="pool size as a multiple of --n-clips (0: none)")
    p.set_defaults(func=_make_data)

    p = sub.add_parser("run-notebooks", help="execute the numbered notebooks with papermill")
    p.add_argument("--out", default=None, help="folder for executed copies (default runs/executed)")
    p.add_argument("--timeout", type=int, default=900, help="per-cell timeout, seconds")
    p.add_argument("--only", nargs="*", help="notebook name prefixes to run, e.g. 01 03")
    p.set_defaults(func=_run_notebooks)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
