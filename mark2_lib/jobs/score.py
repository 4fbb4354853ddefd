"""The two corpus jobs, as the command line (`mark2 soft-labels`, `mark2 predict`) and notebook 02 run them.

    soft_labels_job("dnsmos", ["data/default/labels.csv"], "soft_labels.csv")
    predict_job("runs/student", ["recordings/"], "predictions.jsonl", engine="local")

Both read their inputs (jobs.inputs), score them in resumable shards under `<out>.parts/` (jobs.shards)
on the chosen engine, then, on the driver, write the file the extension of `out` names: `.csv` as
today (soft_labels.csv, or `mark2 predict`'s table) or `.jsonl` (every input field, then ours).
The parts folder is removed once the output is written, unless `keep_parts`.
"""
from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_write
from ..config import MIN_SECONDS, SILENCE_DBFS
from ..data import write_soft_labels
from ..dnsmos import fit_platt, platt, require_dnsmos
from ..errors import DataError
from .inputs import Item, read_inputs
from .outputs import write_rows
from .scorers import StudentSpec, TeacherRunSpec
from .teachers import DnsmosSpec, TorchScriptSpec
from .shards import parts_dir, run_sharded

TORCHSCRIPT_SUFFIXES = (".ts", ".pt")
OUT_SUFFIXES = (".csv", ".jsonl")
DEFAULT_CACHE = "data/cache"  # as notebook 02: DNSMOS scores are shared with it


def teacher_spec(teacher, *, segments: bool = False, cache_dir=None):
    """The scorer spec of `teacher`: "dnsmos", a trained run folder, or a TorchScript file (.ts / .pt)."""
    if str(teacher) == "dnsmos":
        from ..paths import resolve

        require_dnsmos()  # ImportError saying how to install the extra, before anything starts
        return DnsmosSpec(resolve(cache_dir if cache_dir is not None else DEFAULT_CACHE), segments=segments)
    path = Path(teacher)
    if path.is_dir():
        return TeacherRunSpec(path, segments=segments)
    if path.is_file() and path.suffix.lower() in TORCHSCRIPT_SUFFIXES:
        from .teachers import load_torchscript

        load_torchscript(path)  # DataError now, naming the file, rather than in every worker
        return TorchScriptSpec(path, segments=segments)
    what = "does not exist" if not path.exists() else f"is not a run folder or a TorchScript file {TORCHSCRIPT_SUFFIXES}"
    raise ValueError(f"teacher {str(teacher)!r} {what}; use 'dnsmos', a trained run folder or a TorchScript file")


def _check_out(out) -> Path:
    out = Path(out)
    if out.suffix.lower() not in OUT_SUFFIXES:
        raise ValueError(f"out={str(out)!r}: the output format follows its extension, one of {', '.join(OUT_SUFFIXES)}")
    return out


def _run(items, spec, out, engine, workers, shard_size, ray_address, progress, keep_parts) -> list[dict]:
    """run_sharded, in this process when there is a single shard for a local engine (same rows, no pool to start)."""
    if engine == "local" and len(items) <= shard_size:
        engine = "serial"
    return run_sharded(items, spec, out, engine=engine, workers=workers, shard_size=shard_size,
                       ray_address=ray_address, progress=progress)


def _done(out: Path, keep_parts: bool) -> None:
    if not keep_parts:
        shutil.rmtree(parts_dir(out), ignore_errors=True)


def _jsonl_items(items: list[Item]) -> list[Item]:
    """Items whose manifest "clip_id" field is the clip_id we write anyway: it is written once, as ours."""
    return [dataclasses.replace(it, fields={k: v for k, v in it.fields.items()
                                            if not (k == "clip_id" and str(v) == it.clip_id)})
            if "clip_id" in it.fields else it for it in items]


def _errors(items: list[Item], rows: list[dict]) -> list[dict]:
    return [{"clip_id": it.clip_id, "source": it.source, "error": r["error"]} for it, r in zip(items, rows) if r["error"]]


# ----------------------------------------------------------------------------- soft labels


def _train_labels(items: list[Item]) -> dict[int, int]:
    """{item index: hard label (1 = noise)} of the train split's labelled items: what the Platt fit uses.
    A train item without a label is left out of the fit; one with a label that is not a label is an error."""
    from ..data.labels import parse_label

    out = {}
    for it in items:
        if not it.error and str(it.fields.get("split", "")).strip().lower() == "train":
            label = it.fields.get("label")
            if label is None or str(label).strip() == "":
                continue
            try:
                out[it.index] = parse_label(label)
            except DataError as e:
                raise DataError(f"{it.source}: {e}") from None
    return out


def _platt(items, rows, labels: dict[int, int]) -> tuple[float, float]:
    fit = [(r["bak"], labels[it.index]) for it, r in zip(items, rows) if it.index in labels and not r["error"]]
    if not fit:
        raise DataError("DNSMOS calibration needs labelled train clips, but every train clip failed to score")
    return fit_platt([b for b, _ in fit], [y for _, y in fit])


def soft_labels_job(teacher, inputs, out, *, root=None, segments: bool = False, engine: str = "local",
                    workers: int | None = None, shard_size: int = 64, ray_address: str | None = None,
                    cache_dir=None, progress: bool = True, keep_parts: bool = False) -> dict:
    """Soft labels for every input clip by `teacher` ("dnsmos", a run folder or a TorchScript file), to `out`.

    `.csv`: the soft_labels.csv format (data.write_soft_labels): a whole-clip row per scored clip and,
    with `segments`, a row per segment. `.jsonl`: every input field, then clip_id, p_clean, p_noise,
    teacher (DNSMOS adds sig, bak, ovr; `segments` adds segment_p_noise) and error, one line per input.
    DNSMOS is calibrated as notebook 02 does it: a Platt fit of BAK on the train split's hard labels
    (the "split" and "label" fields of a labels.csv or a manifest), on the driver after scoring; its
    scores come from the content cache in `cache_dir` (default data/cache) when they are there.
    Clips that fail get no soft-label row (a .jsonl row with their error); they are printed and returned.

    Returns {"path", "teacher", "n_inputs", "n_scored", "errors" (clip_id, source, error each), and for
    DNSMOS "a", "b" (p_noise = sigmoid(a * BAK + b)) and "n_cached"}.
    """
    out = _check_out(out)
    spec = teacher_spec(teacher, segments=segments, cache_dir=cache_dir)
    items = read_inputs(inputs, root=root)
    dnsmos = isinstance(spec, DnsmosSpec)
    labels = _train_labels(items) if dnsmos else {}
    if dnsmos and len(set(labels.values())) < 2:
        raise DataError(f"DNSMOS calibration needs labelled train clips of both kinds (clean and noise), found "
                        f"{len(labels)} labelled train clip(s): give a labels.csv, or a manifest whose lines "
                        f"have \"split\": \"train\" and \"label\" fields")
    rows = _run(items, spec, out, engine, workers, shard_size, ray_address, progress, keep_parts)
    info = {"path": str(out), "teacher": spec.teacher, "n_inputs": len(items)}
    if dnsmos:
        a, b = _platt(items, rows, labels)
        info.update(a=a, b=b, n_cached=sum(bool(r.get("cached")) for r in rows))
    ours = []
    for r in rows:
        if r["error"]:
            ours.append({"clip_id": r["clip_id"], "p_clean": None, "p_noise": None, "teacher": spec.teacher,
                         "segment_p_noise": None, "error": r["error"]})
            continue
        if dnsmos:
            p = float(platt(r["bak"], a, b))
            seg = [float(q) for q in platt(r["segment_bak"], a, b)] if segments else None
        else:
            p, seg = r["p_noise"], r["segment_p_noise"]
        ours.append({**{k: r[k] for k in ("sig", "bak", "ovr") if dnsmos}, "clip_id": r["clip_id"],
                     "p_clean": 1.0 - p, "p_noise": p, "teacher": spec.teacher, "segment_p_noise": seg, "error": ""})
    ok = [o for o in ours if not o["error"]]
    if out.suffix.lower() == ".csv":
        write_soft_labels(out, [o["clip_id"] for o in ok], np.array([o["p_noise"] for o in ok], dtype=np.float64),
                          [o["segment_p_noise"] for o in ok], teacher=spec.teacher)
    else:
        columns = ["clip_id", "p_clean", "p_noise", "teacher", *(("sig", "bak", "ovr") if dnsmos else ()),
                   *(("segment_p_noise",) if segments else ()), "error"]
        write_rows(ours, out, columns, _jsonl_items(items))
    _done(out, keep_parts)
    info.update(n_scored=len(ok), errors=_errors(items, rows))
    for e in info["errors"]:
        where = "" if e["source"] in e["error"] else f" ({e['source']})"
        print(f"soft labels: no label for {e['clip_id']}{where}: {e['error']}", file=sys.stderr)
    return info


# ----------------------------------------------------------------------------- student predictions


def predict_items(inputs, root=None) -> tuple[list[Item], int]:
    """read_inputs, except that a PATH that does not exist is an error row (as `mark2 predict` always did),
    not an exception; also returns how many non-audio files inside folders were left out."""
    from ..inference.files import find_audio

    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    n_ignored = sum(find_audio([p])[1] for p in inputs if Path(p).is_dir())
    if all(Path(p).exists() for p in inputs):
        return read_inputs(inputs, root=root), n_ignored
    items, seen = [], {}
    for given in inputs:
        if Path(given).exists():
            items += read_inputs([given], root=root)
        else:
            items.append(Item(0, str(Path(given).absolute()), str(given), {}, str(given), f"{given}: file not found",
                              str(given)))
    for i, it in enumerate(items):
        error = it.error
        if it.clip_id in seen and "duplicate clip_id" not in error:
            dup = f"{it.source}: duplicate clip_id {it.clip_id!r}, already used by {seen[it.clip_id]}"
            error = f"{error}; {dup}" if error else dup
        seen.setdefault(it.clip_id, it.source)
        items[i] = dataclasses.replace(it, index=i, error=error)
    return items, n_ignored


def predict_job(run_dir, inputs, out, *, root=None, segments: bool = False, engine: str = "local",
                workers: int | None = None, shard_size: int = 64, ray_address: str | None = None,
                batch_size: int = 64, threshold: float = 0.5, min_seconds: float = MIN_SECONDS,
                silence_dbfs: float | None = SILENCE_DBFS, progress: bool = True, keep_parts: bool = False) -> dict:
    """Score every input with the trained run `run_dir` (or its `.onnx` export), as `mark2 predict` does, to `out`.

    `.csv`: today's table (path, p_noise, label, n_segments, error; floats to 6 decimals); `.jsonl`: every
    input field, then clip_id and those columns. With `segments`, `<out stem>_segments.csv` beside it
    (path, segment, start_s, end_s, p_noise, label). A file that fails has an error row, never none;
    one shorter than `min_seconds` too, and one quieter than `silence_dbfs` is labelled "silent"
    (`inference.predict.predict_paths`).
    FileNotFoundError / ValueError for a bad run folder or option, before anything is scored.

    Returns {"written" (paths), "clips" (the clip table, as predict_paths returns it), "segments" (or
    None), "errors" (clip_id, source, error each)}.
    """
    from ..inference.onnx_model import OnnxClassifier, is_onnx_file
    from ..inference.predict import CLIP_COLUMNS, SEGMENT_COLUMNS, SILENT, segments_path, write_predictions
    from ..run_folders import load_classifier

    out = _check_out(out)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold} must be in [0, 1]")
    if is_onnx_file(run_dir):  # an ONNX export (`mark2 export --format onnx`), run in ONNX Runtime
        if not Path(run_dir).is_file():
            raise FileNotFoundError(f"{run_dir}: ONNX file not found")
        OnnxClassifier(run_dir)  # not ONNX, not a mark2 export, or no onnxruntime: fails here, not in every worker
    else:
        load_classifier(run_dir)  # a missing or broken run fails here, not in every worker
    spec = StudentSpec(run_dir, batch_size=batch_size, segments=segments, threshold=threshold,
                       min_seconds=min_seconds, silence_dbfs=silence_dbfs)
    items, n_ignored = predict_items(inputs, root=root)
    rows = _run(items, spec, out, engine, workers, shard_size, ray_address, progress, keep_parts)
    rows = [{**r, "path": item.shown or r["path"]} for r, item in zip(rows, items)]  # paths as the user gave them
    clips = pd.DataFrame([[r.get(c) for c in CLIP_COLUMNS] for r in rows], columns=CLIP_COLUMNS)
    clips = clips.astype({"p_noise": "float64", "n_segments": "Int64"})
    clips.attrs["n_ignored"] = n_ignored
    seg = None
    if segments:
        seg = pd.DataFrame([[r["path"], i, t0, t1, float("nan") if p is None else p,
                             SILENT if p is None else "noise" if p >= threshold else "clean"]
                            for r in rows if not r["error"] for i, (t0, t1, p) in enumerate(r["segments"])],
                           columns=SEGMENT_COLUMNS)
    if out.suffix.lower() == ".csv":
        written = write_predictions(clips, out, seg)
    else:
        written = [write_rows(rows, out, ["clip_id", *CLIP_COLUMNS], _jsonl_items(items))]
        if seg is not None:
            written.append(atomic_write(segments_path(out),
                                        lambda f: seg.to_csv(f, index=False, float_format="%.6f"), mode="w"))
    _done(out, keep_parts)
    return {"written": written, "clips": clips, "segments": seg, "errors": _errors(items, rows)}
