"""Teachers and their soft labels: the default pre-trained teacher, calibration, and bring-your-own.

The default teacher is the large model of `models.build_model("teacher")`, trained with
hard labels only on a separate, larger pool of clips (a stand-in for a teacher pre-trained
on much more data). It then labels every clip of the student dataset, per clip and per
segment, at T=1, optionally after temperature scaling fitted on its own val split.
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.optimize import minimize_scalar
from tqdm.auto import tqdm

from .audio import load_audio, segment_waveform
from .config import AudioConfig, ModelConfig, TrainConfig, model_config
from .errors import DataError
from .data import (FeatureCache, Manifest, SoftLabels, file_sha1, load_labels, load_soft_labels,
                   write_soft_labels)
from .evaluate import metrics_table, predict_features
from .metrics import expected_calibration_error
from .models import load_classifier
from .train import train_run

DEFAULT_TEACHER_NAME = "mark2-teacher"
CHANCE_MARGIN = 0.1  # a teacher whose macro-F1 or ROC-AUC is within this of chance gets a warning


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
    return train_run(run_dir, pool, features, None, cfg, audio, model_cfg or model_config("teacher"),
                     resume=resume, extra_config={"role": "teacher", "data_dir": str(pool_dir)})


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling: the T > 0 that minimises the NLL of softmax(logits / T) on held-out clips."""
    logits = torch.as_tensor(logits, dtype=torch.float64)
    labels = torch.tensor(np.asarray(labels), dtype=torch.long)

    def nll(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(logits / np.exp(log_t), labels))

    return float(np.exp(minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded").x))


def write_teacher_soft_labels(run_dir, manifest: Manifest, features: dict, out_csv,
                              calibration: tuple[Manifest, dict] | None = None,
                              teacher_name: str = DEFAULT_TEACHER_NAME) -> dict:
    """Label every clip of `manifest` with a trained run, per clip and per segment, into `out_csv`.

    With `calibration=(val_manifest, val_features)` a temperature is fitted there first and
    the ECE before and after is reported. Returns {"path", "temperature", "ece_before", "ece_after"}.
    """
    model = load_classifier(run_dir).model
    info = {"path": str(out_csv), "temperature": 1.0, "ece_before": None, "ece_after": None}
    if calibration is not None:
        cal_m, cal_f = calibration
        pred = predict_features(model, cal_m, cal_f)
        y = cal_m.df["label"].to_numpy()
        t = fit_temperature(pred["logits"], y)
        p_after = torch.softmax(torch.as_tensor(pred["logits"]) / t, dim=-1)[:, 1].numpy()
        info.update(temperature=t, ece_before=expected_calibration_error(y, pred["p_noise"]),
                    ece_after=expected_calibration_error(y, p_after))
    pred = predict_features(model, manifest, features, temperature=info["temperature"])
    write_soft_labels(out_csv, pred["clip_id"], pred["p_noise"], pred["segment_p_noise"], teacher=teacher_name)
    return info


def teacher_report(soft: SoftLabels, test: Manifest, truth: pd.DataFrame | None = None,
                   name: str = "teacher") -> pd.DataFrame:
    """The teacher's quality on the student's test split; warns when it is barely better than chance."""
    missing = [c for c in test.clip_ids if c not in soft.clip]
    if missing:
        raise DataError(f"the teacher has no clip-level soft label for {len(missing)} test clips, e.g. {missing[:3]}")
    p = np.array([soft.clip[c][1] for c in test.clip_ids])
    table = metrics_table({name: p}, test, truth)
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
        write_soft_labels(out_csv, ids, np.array([soft.clip[c][1] for c in ids]), seg,
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


def teacher_from_dnsmos(manifest: Manifest, audio: AudioConfig, out_csv, cache_dir, truth: pd.DataFrame | None = None,
                        segment_splits=("train", "val", "test"), progress: bool = True) -> dict:
    """DNSMOS as the teacher: BAK per clip (and per segment of `segment_splits`), Platt-calibrated on train.

    Needs the `dnsmos` extra; warns when truth.csv says some clips are not speech. See `mark2_lib.dnsmos`.
    """
    from .dnsmos import dnsmos_soft_labels

    return dnsmos_soft_labels(manifest, audio, cache_dir, out_csv, truth=truth, segment_splits=tuple(segment_splits),
                              progress=progress)
