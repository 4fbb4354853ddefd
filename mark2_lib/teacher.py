"""Teachers and their soft labels: `make_soft_labels` for any of the four kinds of teacher, the
default pre-trained teacher, its quality report, and bring-your-own (import, TorchScript, DNSMOS).

The default teacher is the large model of `models.build_model("teacher")`, trained with
hard labels only on a separate, larger pool of clips (a stand-in for a teacher pre-trained
on much more data). It then labels every clip of the student dataset, per clip and per
segment, optionally after temperature scaling fitted on its own val split (calibration.py).
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .audio import load_audio, segment_waveform
from .builders.synth import POOL_SPLIT_SHARES, ensure_dataset
from .calibration import calibrated_predictions
from .config import CLASSES, AudioConfig, ModelConfig, TrainConfig, model_config
from .errors import DataError
from .data import (UNLABELLED, Dataset, FeatureCache, Manifest, SoftLabels, file_sha1, load_labels,
                   load_soft_labels, write_soft_labels)
from .evaluate import metrics_table
from .run_folders import load_classifier
from .train import train_run

DEFAULT_TEACHER_NAME = "mark2-teacher"
CHANCE_MARGIN = 0.1  # a teacher whose macro-F1 or ROC-AUC is within this of chance gets a warning
TEACHERS = ("default", "import", "torchscript", "dnsmos")  # the kinds make_soft_labels knows


def check_disjoint(pool: Manifest, student: Manifest) -> None:
    """Raise DataError if any teacher-pool clip has the same audio content (sha1) as a student clip."""
    student_hashes = {file_sha1(p): c for c, p in zip(student.df["clip_id"], student.df["path"])}
    shared = [(c, student_hashes[h]) for c, p in zip(pool.df["clip_id"], pool.df["path"])
              if (h := file_sha1(p)) in student_hashes]
    if shared:
        examples = ", ".join(f"pool {a} = student {b}" for a, b in shared[:3])
        raise DataError(f"{len(shared)} teacher-pool clips have the same audio as student clips ({examples}); "
                        f"the teacher would see the student's test clips: build the pool with another seed")


def pretrain_teacher(pool_dir, run_dir, audio: AudioConfig, cfg: TrainConfig, cache_dir,
                     model_cfg: ModelConfig | None = None, resume: bool = True,
                     student: Manifest | None = None) -> dict:
    """Train the large model on the teacher pool with hard labels only (alpha = 0).

    With `student` (the student's manifest) the pool is first checked to share no audio with it.
    """
    pool = load_labels(Path(pool_dir) / "labels.csv", sample_rate=audio.sample_rate)
    if student is not None:
        check_disjoint(pool, student)
    features = FeatureCache(cache_dir, audio).features(pool, progress=cfg.progress)
    cfg = dataclasses.replace(cfg, alpha=0.0)
    return train_run(run_dir, Dataset(pool, features), cfg, audio, model_cfg or model_config("teacher"),
                     resume=resume, extra_config={"role": "teacher", "data_dir": str(pool_dir)})


def write_teacher_soft_labels(run_dir, manifest: Manifest, features: dict, out_csv,
                              calibration: tuple[Manifest, dict] | None = None,
                              teacher_name: str = DEFAULT_TEACHER_NAME) -> dict:
    """Label every clip of `manifest` with a trained run, per clip and per segment, into `out_csv`.

    With `calibration=(val_manifest, val_features)` a calibration temperature is fitted there first
    and the ECE before and after is reported.
    Returns {"path", "calibration_temperature", "ece_before", "ece_after"}.
    """
    pred, info = calibrated_predictions(load_classifier(run_dir).model, manifest, features, calibration)
    write_soft_labels(out_csv, pred["clip_id"], pred["p_noise"], pred["segment_p_noise"], teacher=teacher_name)
    return {"path": str(out_csv), **info}


def teacher_report(soft: SoftLabels, test: Manifest, truth: pd.DataFrame | None = None,
                   name: str = "teacher") -> pd.DataFrame:
    """The teacher's quality on the student's test split; warns when it is barely better than chance."""
    table = metrics_table({name: soft.p_noise(test.clip_ids)}, test, truth)
    row = table.iloc[0]
    if row["macro_f1"] < 0.5 + CHANCE_MARGIN or not (row["roc_auc"] >= 0.5 + CHANCE_MARGIN):
        warnings.warn(f"the teacher is barely better than chance on the test split (macro-F1 {row['macro_f1']:.3f}, "
                      f"ROC-AUC {row['roc_auc']:.3f}): distilling from it cannot help", stacklevel=2)
    return table


def import_soft_labels(csv_or_list, manifest: Manifest, out_csv=None) -> SoftLabels:
    """Validate and merge soft labels from any external model(s); several teachers are averaged.

    Accepts one CSV or a list, with probabilities or logits, per clip and/or per segment (see
    data/README.md). The ensemble is the arithmetic mean of the teachers' probabilities for
    each clip (and each segment). With `out_csv` the merged labels are written in the same format.
    """
    soft = load_soft_labels(csv_or_list, manifest)
    if out_csv is not None:
        ids = [c for c in manifest.clip_ids if c in soft.clip]
        seg = [np.array([soft.segment.get(c, {})[k][1] for k in sorted(soft.segment.get(c, {}))]) for c in ids]
        write_soft_labels(out_csv, ids, soft.p_noise(ids), seg,
                          teacher="+".join(soft.teachers) or "ensemble")
    return soft


def teacher_from_torchscript(path, manifest: Manifest, audio: AudioConfig, out_csv,
                             teacher_name: str | None = None, progress: bool = True) -> SoftLabels:
    """Run a user's TorchScript teacher (waveform batch `[B, samples]` -> logits `[B, 2]`) over a dataset.

    Each clip is scored whole (clip soft label) and window by window (segment soft labels);
    the result is written to `out_csv` and loaded back through the validating loader.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            teacher = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:
        raise DataError(f"{path}: not a loadable TorchScript teacher ({e})") from None
    ids, p_clip, p_seg = [], [], []
    with torch.no_grad():
        for clip_id, wav in tqdm(zip(manifest.df["clip_id"], manifest.df["path"]), total=len(manifest),
                                 desc=f"teacher {path.name}", disable=not progress):
            wave = load_audio(wav, audio.sample_rate)
            logits = torch.cat([teacher(wave[None]), teacher(segment_waveform(wave, audio))])
            if logits.shape[-1] != 2 or not torch.isfinite(logits).all():
                raise DataError(f"{path}: teacher output for {wav} has shape {tuple(logits.shape)} "
                                f"or non-finite values; expected finite logits [B, 2]")
            p = torch.softmax(logits.double(), dim=-1)[:, 1].numpy()
            ids.append(clip_id)
            p_clip.append(p[0])
            p_seg.append(p[1:])
    write_soft_labels(out_csv, ids, np.array(p_clip), p_seg, teacher=teacher_name or path.stem)
    return load_soft_labels(out_csv, manifest)


def score_dnsmos(manifest: Manifest, audio: AudioConfig, cache_dir, segment_splits=("train", "val", "test"), *,
                 engine: str = "local", workers: int | None = None, ray_address: str | None = None,
                 shard_size: int = 16, progress: bool = True) -> dict[str, bool]:
    """Put the DNSMOS scores of every clip (with segments for `segment_splits`) into the content cache,
    scoring the missing ones on `engine` ("serial", "local" or "ray", as the corpus jobs; jobs.shards).

    Returns {clip_id: whether it was in the cache already}. A clip that cannot be scored raises a DataError
    naming it. The cache is what the engines share: `dnsmos.dnsmos_soft_labels` then reads every score from it.
    """
    from .dnsmos import DnsmosCache
    from .jobs.engines import check_engine
    from .jobs.inputs import Item
    from .jobs.teachers import DnsmosSpec
    from .jobs.shards import run_sharded

    check_engine(engine, workers)  # a bad engine or worker count fails even when every score is cached
    cache = DnsmosCache(cache_dir, audio)
    cache.folder.mkdir(parents=True, exist_ok=True)
    cached, todo = {}, {True: [], False: []}
    for row in manifest.df.itertuples(index=False):
        segments = row.split in segment_splits
        cached[row.clip_id] = cache.has(row.path, segments)
        if not cached[row.clip_id]:
            todo[segments].append(Item(len(todo[segments]), str(row.path), row.clip_id, {},
                                       f"labels.csv line {row.row}"))
    for segments, items in todo.items():
        if not items:
            continue
        run_engine = "serial" if engine == "local" and len(items) <= shard_size else engine
        with tempfile.TemporaryDirectory(prefix="dnsmos-job-", dir=cache.folder.parent) as tmp:
            rows = run_sharded(items, DnsmosSpec(str(cache_dir), segments=segments, audio=audio), Path(tmp) / "scores",
                               engine=run_engine, workers=workers, shard_size=shard_size, ray_address=ray_address,
                               progress=progress)
        failed = [f"{r['clip_id']} ({it.source}): {r['error']}" for it, r in zip(items, rows) if r["error"]]
        if failed:
            raise DataError(f"DNSMOS could not score {len(failed)} clip(s): " + "; ".join(failed[:5]))
    return cached


def teacher_from_dnsmos(manifest: Manifest, audio: AudioConfig, out_csv, cache_dir, truth: pd.DataFrame | None = None,
                        segment_splits=("train", "val", "test"), progress: bool = True, engine: str = "local",
                        workers: int | None = None, ray_address: str | None = None) -> dict:
    """DNSMOS as the teacher: BAK per clip (and per segment of `segment_splits`), Platt-calibrated on train.

    The clips not in the content cache are scored on `engine` first (`score_dnsmos`: "local" runs one
    model per core, "ray" on a Ray cluster at `ray_address`, default a local one); the scores are the
    same on every engine. Needs the `dnsmos` extra; warns when truth.csv says some clips are not speech.
    See `mark2_lib.dnsmos`.
    """
    from .dnsmos import dnsmos_soft_labels, require_dnsmos

    require_dnsmos()
    started = time.perf_counter()
    cached = score_dnsmos(manifest, audio, cache_dir, tuple(segment_splits), engine=engine, workers=workers,
                          ray_address=ray_address, progress=progress)
    info = dnsmos_soft_labels(manifest, audio, cache_dir, out_csv, truth=truth, segment_splits=tuple(segment_splits),
                              progress=False)
    info["scores"]["cached"] = info["scores"]["clip_id"].map(cached).astype(bool)
    info["seconds"] = time.perf_counter() - started
    return info


def make_soft_labels(kind: str, manifest: Manifest, audio: AudioConfig, out_csv, cache_dir, *,
                     truth: pd.DataFrame | None = None, progress: bool = True,
                     pool_dir=None, pool_factor: int = 3, pool_seed: int = 1000, run_dir=None,
                     train_cfg: TrainConfig | None = None, calibrate: bool = True,
                     sources=(), teacher_path=None, segment_splits=("train", "val", "test"), engine: str = "local",
                     workers: int | None = None, ray_address: str | None = None) -> dict:
    """Soft labels for every clip of `manifest`, written to `out_csv` by the teacher of `kind` (TEACHERS).

    - "default": build a pool of `pool_factor` x len(manifest) clips at `pool_dir` (seed `pool_seed`;
      an existing pool is kept), check it shares no audio with `manifest`, train the built-in teacher
      on it in `run_dir` with `train_cfg` (hard labels only), and label the clips, calibrated on the
      pool's val split when `calibrate`. Reads features with `audio` from `cache_dir`.
    - "import": validate and merge the soft-label CSVs `sources` (several teachers are averaged).
    - "torchscript": run the TorchScript teacher at `teacher_path` (waveform -> logits) over the clips.
    - "dnsmos": DNSMOS, Platt-calibrated on the train split, per segment for `segment_splits` too;
      `truth` lets it warn about clips that are not speech. The clips not yet in the cache are scored on
      `engine` ("serial", "local": a process per core, or "ray": at `ray_address`, default a local Ray),
      with `workers` processes or actors (None: every core).

    Returns {"kind", "path", "summary" (what was done, as text)} and, for "default", "run_dir",
    "history" (the teacher's history.csv), "calibration_temperature", "ece_before", "ece_after"; for
    "dnsmos", what `teacher_from_dnsmos` returns and "table" (mean scores per split and hard label).
    """
    if kind not in TEACHERS:
        raise ValueError(f"teacher={kind!r}: expected one of {', '.join(map(repr, TEACHERS))}")
    info = {"kind": kind, "path": str(out_csv)}
    if kind == "default":
        if pool_dir is None or run_dir is None or train_cfg is None:
            raise ValueError("the default teacher needs pool_dir, run_dir and train_cfg")
        pool_path = ensure_dataset(pool_dir, n_clips=pool_factor * len(manifest), seed=pool_seed,
                                   progress=progress, splits=POOL_SPLIT_SHARES)
        result = pretrain_teacher(pool_path, run_dir, audio, train_cfg, cache_dir, student=manifest)
        cache = FeatureCache(cache_dir, audio)
        pool_val = load_labels(Path(pool_path) / "labels.csv", sample_rate=audio.sample_rate).split("val")
        calibration = (pool_val, cache.features(pool_val, progress=False)) if calibrate else None
        info.update(write_teacher_soft_labels(run_dir, manifest, cache.features(manifest, progress=progress),
                                              out_csv, calibration=calibration))
        lines = [f"teacher trained: best epoch {result['best_epoch']} of {result['epochs_run']}; "
                 f"{result['stop_reason']}"]
        if calibrate:
            lines.append(f"temperature scaling on the teacher's val split: calibration temperature "
                         f"{info['calibration_temperature']:.3f}, ECE {info['ece_before']:.4f} -> {info['ece_after']:.4f}")
        info.update(run_dir=Path(run_dir), history=pd.read_csv(Path(run_dir) / "history.csv"), summary="\n".join(lines))
    elif kind == "import":
        sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
        if not sources:
            raise ValueError("teacher 'import' needs one or more soft-label CSVs (sources; notebook 02: soft_labels_in)")
        soft = import_soft_labels(sources, manifest, out_csv=out_csv)
        info["summary"] = f"imported {len(sources)} file(s) of soft labels from teachers {soft.teachers}"
    elif kind == "torchscript":
        if not teacher_path:
            raise ValueError("teacher 'torchscript' needs teacher_path (a TorchScript file)")
        soft = teacher_from_torchscript(teacher_path, manifest, audio, out_csv, progress=progress)
        info["summary"] = f"TorchScript teacher {Path(teacher_path).name} labelled {len(soft.clip)} clips"
    else:
        info.update(teacher_from_dnsmos(manifest, audio, out_csv, cache_dir, truth=truth,
                                        segment_splits=segment_splits, progress=progress, engine=engine,
                                        workers=workers, ray_address=ray_address))
        scores = info["scores"]
        info["summary"] = (
            f"DNSMOS: {len(scores)} clips in {info['seconds']:.0f} s ({(~scores['cached']).sum()} scored now, "
            f"{scores['cached'].sum()} from the cache)\n"
            f"Platt fit on the train split: p_noise = sigmoid({info['a']:.3f} * BAK + {info['b']:.3f}); "
            f"ECE train {info['ece_train']:.4f}, val {info['ece_val']:.4f}")
        names = {**dict(enumerate(CLASSES)), UNLABELLED: "unlabelled"}
        info["table"] = (scores.assign(label=scores["label"].map(names))
                         .groupby(["split", "label"])[["sig", "bak", "ovr", "p_noise"]].mean().round(3))
    return info
