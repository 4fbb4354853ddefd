"""`--quick` for the benchmarks: a smoke run of a few seconds (tests/test_benchmarks.py runs each one
so), with tiny inputs and one repeat. Its numbers mean little; the full run's defaults stay as they are."""
from __future__ import annotations

import argparse


def _flag(name: str, value) -> str:
    if value is True:
        return f"--{name.replace('_', '-')}"
    shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
    return f"--{name.replace('_', '-')} {shown}"


def parse_args(ap: argparse.ArgumentParser, argv, quick: dict) -> argparse.Namespace:
    """Add `--quick` to `ap` and parse `argv`: with --quick, `quick` {dest: value} replaces the
    defaults, and options given on the command line still win."""
    ap.add_argument("--quick", action="store_true",
                    help="smoke run in a few seconds, numbers meaningless: "
                         + " ".join(_flag(k, v) for k, v in quick.items()) + " unless given")
    args = ap.parse_args(argv)
    if args.quick:
        ap.set_defaults(**quick)
        args = ap.parse_args(argv)
    return args
