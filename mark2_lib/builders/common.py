"""What the dataset builders share: atomic CSV and 16-bit WAV writers, the bookkeeping of a build
folder (marker file, parameters file, completeness check) and dealing shuffled items into splits.

numpy/soundfile only: this module never imports torch (synth's worker processes import it).
"""
from __future__ import annotations

import csv
import io
import json
import locale
from pathlib import Path

import soundfile as sf

from ..atomic import atomic_write, atomic_write_text

LABELS_HEADER = ["clip_id", "path", "label", "split"]  # labels.csv, as data.load_labels reads it


def write_csv(path, header: list[str], rows) -> Path:
    """Write a CSV (header, then rows; "\\n" line ends) atomically, so no reader sees half a file."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = buf.getvalue().encode(locale.getpreferredencoding(False))  # the encoding open() defaults to
    return atomic_write(path, lambda f: f.write(data))


def write_labels(out_dir: Path, clips) -> Path:
    """labels.csv of a build: one row per (clip_id, label, split), its audio at audio/<clip_id>.wav."""
    return write_csv(out_dir / "labels.csv", LABELS_HEADER,
                     [[clip_id, f"audio/{clip_id}.wav", label, split] for clip_id, label, split in clips])


def write_wav(path, x, sample_rate: int) -> Path:
    """Write a float waveform as a 16-bit PCM WAV, atomically.

    Encoded in memory first, then written in one call: faster than letting libsndfile write the file.
    """
    buf = io.BytesIO()
    sf.write(buf, x, sample_rate, subtype="PCM_16", format="WAV")
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def is_built(out_dir: Path, params: dict, params_file: str) -> bool:
    """True when out_dir holds a complete build with exactly these parameters (saved in `params_file`)."""
    try:
        if json.loads((out_dir / params_file).read_text()) != params:
            return False
        with open(out_dir / "labels.csv", newline="") as f:
            paths = [row["path"] for row in csv.DictReader(f)]
    except (OSError, ValueError, KeyError):
        return False
    return (out_dir / "truth.csv").is_file() and len(paths) == params["n_clips"] + params.get("n_transfer", 0) and all(
        (out_dir / p).is_file() for p in paths)


def start_build(out_dir: Path, marker: str, made_by: str, params_file: str) -> None:
    """Make out_dir ready for a (re)build: refuse a folder of files the builder did not make, create
    audio/, write the marker file, and remove `params_file` so an interrupted build never looks complete."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / marker).exists():
        raise ValueError(f"{out_dir} holds files that {made_by} did not make; "
                         "refusing to write there (choose a new or empty folder)")
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    (out_dir / marker).write_text(f"made by {made_by}; safe to regenerate\n")
    (out_dir / params_file).unlink(missing_ok=True)


def finish_build(out_dir: Path, params: dict, params_file: str) -> Path:
    """Save the build's parameters, last: their file marks the build complete (see `is_built`)."""
    atomic_write_text(json.dumps(params, indent=2) + "\n", out_dir / params_file)
    return out_dir


def deal_splits(n: int, shares, at_least: int) -> list[str]:
    """The split of each of n shuffled items: for each (name, share) of `shares` in turn, the next
    round(share * n) items (at least `at_least`, while items last); "train" for the rest."""
    dealt = []
    for name, share in shares:
        dealt += [name] * max(round(share * n), at_least)
    return (dealt + ["train"] * n)[:n]
