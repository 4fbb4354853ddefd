"""Evaluation: predictions over cached features, metrics tables, breakdowns, agreement with the teacher,
ROC-AUC per SNR band, and KD vs hard-only.

What a model costs (parameters, MACs, speed) is in timing.py.
"""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader

from .data import ClipDataset, Manifest, collate_clips
from .metrics import classification_metrics, confusion
from .models import ClipClassifier

SNR_BANDS = [-np.inf, 0, 5, 10, 15, 20, 25, np.inf]
BAND_EDGES_DB = (5, 15, 25)  # snr_band_auc's bands: <= 5, 5-15, 15-25 and > 25 dB, each against the clean clips


def predict_features(model: ClipClassifier, manifest: Manifest, features: dict, batch_size: int = 128,
                     calibration_temperature: float = 1.0) -> dict:
    """Run a model over cached features: clip logits, clip P(noise) and per-segment P(noise) lists.

    An unfused `model` (one in training, say) is left as it is: a fused copy of it does the scoring."""
    if not model.encoder.fused:
        model = copy.deepcopy(model).fuse()
    device = next(model.parameters()).device
    loader = DataLoader(ClipDataset(manifest, features), batch_size=batch_size, shuffle=False,
                        collate_fn=collate_clips)
    clip_logits, seg_p = [], []
    with torch.no_grad():
        for batch in loader:
            mask = batch["segment_mask"]
            logits, seg_logits = model(batch["features"].to(device), mask.to(device))
            clip_logits.append(logits.float().cpu())
            seg = torch.softmax(seg_logits.float().cpu() / calibration_temperature, dim=-1)[..., 1]
            seg_p.extend(seg[i][mask[i]].numpy() for i in range(len(mask)))
    logits = torch.cat(clip_logits) if clip_logits else torch.zeros(0, 2)
    return {
        "clip_id": list(manifest.df["clip_id"]),
        "logits": logits.numpy(),
        "p_noise": torch.softmax(logits / calibration_temperature, dim=-1)[:, 1].numpy(),
        "segment_p_noise": seg_p,
    }


def truth_labels(truth: pd.DataFrame, clip_ids) -> np.ndarray:
    """The annotator's expected judgement (P(noise) >= 0.5) for each clip: labels without label noise."""
    t = truth.set_index("clip_id").loc[list(clip_ids)]
    return (t["p_noise_annotator"].to_numpy() >= 0.5).astype(int)


def metrics_table(predictions: dict, manifest: Manifest, truth: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per model: metrics against the hard labels (and against truth.csv when given)."""
    y = manifest.df["label"].to_numpy()
    rows = []
    for name, p in predictions.items():
        row = {"model": name, **classification_metrics(y, p)}
        if truth is not None:
            yt = truth_labels(truth, manifest.df["clip_id"])
            row.update({f"truth_{k}": v for k, v in classification_metrics(yt, p).items()})
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def confusion_matrices(predictions: dict, manifest: Manifest) -> dict:
    """{model name: its 2x2 confusion matrix against the hard labels} (rows true, columns predicted)."""
    y = manifest.df["label"].to_numpy()
    return {name: confusion(y, p) for name, p in predictions.items()}


def breakdown(predictions: dict, manifest: Manifest, truth: pd.DataFrame, by: str) -> pd.DataFrame:
    """Accuracy against the hard labels per value of a truth.csv column (`snr_band` bins snr_db)."""
    t = truth.set_index("clip_id").loc[list(manifest.df["clip_id"])].reset_index()
    order = None
    if by == "snr_band":  # rows from the lowest SNR up, then the clips without noise
        bands = pd.cut(t["snr_db"], SNR_BANDS)
        order = [str(b) for b in bands.cat.categories] + ["no noise"]
        t["snr_band"] = bands.astype(str).where(t["snr_db"].notna(), "no noise")
    if by not in t:
        raise ValueError(f"truth has no column {by!r}; columns: {list(t.columns)}")
    y = manifest.df["label"].to_numpy()
    out = {"n": t.groupby(by).size()}
    for name, p in predictions.items():
        correct = pd.Series(((np.asarray(p) >= 0.5).astype(int) == y).astype(float))
        out[name] = correct.groupby(t[by].to_numpy()).mean()
    table = pd.DataFrame(out)
    return table.loc[[b for b in order if b in table.index]] if order else table


def teacher_agreement(score, p_teacher, threshold: float = 0.5) -> dict:
    """How close a model's test scores are to its teacher's clip P(noise) `p_teacher`: `agrees_with_teacher`,
    the share of clips where its label (score >= threshold) equals the teacher's calibrated one
    (p_teacher >= 0.5), and `corr_with_teacher`, the Pearson correlation of score and p_teacher (NaN when
    either is constant). `score` may be any noise score with its own threshold (a blind estimator's -SNR)."""
    score, p_teacher = np.asarray(score, dtype=np.float64), np.asarray(p_teacher, dtype=np.float64)
    if score.shape != p_teacher.shape or score.ndim != 1 or not len(score):
        raise ValueError(f"score {score.shape} and p_teacher {p_teacher.shape}: expected two equal, non-empty 1-d arrays")
    agree = float(np.mean((score >= threshold) == (p_teacher >= 0.5)))
    constant = np.ptp(score) == 0 or np.ptp(p_teacher) == 0
    return {"agrees_with_teacher": agree,
            "corr_with_teacher": float("nan") if constant else float(np.corrcoef(score, p_teacher)[0, 1])}


def snr_band_auc(scores: dict, clip_ids, truth: pd.DataFrame, edges=BAND_EDGES_DB) -> pd.DataFrame:
    """ROC-AUC of each noise score per SNR band: the clips mixed at an SNR in the band (truth.csv's snr_db)
    against every clip with no noise mixed in (snr_db empty), so each band asks how well a model tells
    noise of that strength from clean speech. Bands: up to edges[0] dB, (edges[i], edges[i + 1]], above
    the last, named "<=5dB", "5-15dB", ... `scores`: {name: score per clip of `clip_ids`, higher = noisier}; a
    band without clips is NaN.
    One row per name; `attrs["n_noisy"]` {band: clips} and `attrs["n_clean"]` say what each AUC rests on."""
    t = truth.set_index("clip_id")
    if "snr_db" not in t:
        raise ValueError(f"truth has no snr_db column; columns: {list(t.columns)}")
    snr = t.loc[list(clip_ids), "snr_db"].to_numpy(dtype=np.float64)
    clean = np.isnan(snr)
    bounds = [-np.inf, *edges, np.inf]
    bands = {(f"<={hi:g}dB" if lo == -np.inf else f">{lo:g}dB" if hi == np.inf else f"{lo:g}-{hi:g}dB"):
             ~clean & (snr > lo) & (snr <= hi) for lo, hi in zip(bounds[:-1], bounds[1:])}
    rows = {}
    for name, score in scores.items():
        score = np.asarray(score, dtype=np.float64)
        if score.shape != snr.shape:
            raise ValueError(f"{name}: {score.shape[0] if score.ndim else 0} scores for {len(snr)} clips")
        rows[name] = {band: float(roc_auc_score(np.r_[np.ones(sel.sum()), np.zeros(clean.sum())],
                                                np.r_[score[sel], score[clean]]))
                      if sel.any() and clean.any() else float("nan") for band, sel in bands.items()}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(bands))
    table.attrs.update(n_noisy={b: int(sel.sum()) for b, sel in bands.items()}, n_clean=int(clean.sum()))
    return table


def mean_std_table(per_seed: pd.DataFrame, group: str = "model") -> pd.DataFrame:
    """Format a per-seed metrics frame as 'mean ± std' strings per model."""
    metrics = [c for c in per_seed.select_dtypes("number").columns if c != "seed"]
    agg = per_seed.groupby(group, sort=False)[metrics].agg(["mean", "std"])
    return pd.DataFrame({m: [f"{a:.3f} ± {0.0 if np.isnan(s) else s:.3f}" for a, s in zip(agg[(m, "mean")], agg[(m, "std")])]
                         for m in metrics}, index=agg.index)


def gap_recovery(table: pd.DataFrame, metric: str = "macro_f1", kd: str = "kd_student",
                 hard: str = "hard_only_student", teacher: str = "teacher") -> float:
    """Share of the teacher - hard-only gap the KD student recovers (1.0 = all of it)."""
    gap = table.loc[teacher, metric] - table.loc[hard, metric]
    return float((table.loc[kd, metric] - table.loc[hard, metric]) / gap) if gap else float("nan")



def speed_report(student_run, paths, sample_rate: int, teacher: str = "run", teacher_run=None,
                 dnsmos_clips: int = 32) -> tuple[pd.DataFrame, str]:
    """Notebook 05's speed table: the student against its teacher on the same audio files (the test
    clips), and one line saying how much faster the student is.

    `teacher="run"` times the trained run in `teacher_run` (left out when it has no weights) in turns
    with the student (timing.speed_table; its "x faster" is the median of per-round ratios).
    `teacher="dnsmos"` times DNSMOS on its own, one clip score per file as notebook 02 scores them, on the
    first `dnsmos_clips` files: each clip up to 9 s is tiled to DNSMOS's one 9.01 s window, so its cost per
    clip is the same on any share of them, and timing every test clip would take minutes.
    """
    from pathlib import Path

    from .audio import load_audio
    from .run_folders import load_classifier
    from .timing import speed_audio, speed_table

    if teacher not in ("run", "dnsmos"):
        raise ValueError(f"teacher={teacher!r}: expected 'run' or 'dnsmos'")
    waves = speed_audio([load_audio(p, sample_rate) for p in paths], sample_rate)
    models = {"student": load_classifier(student_run)}
    if teacher == "run" and teacher_run and (Path(teacher_run) / "head.pt").exists():
        models["teacher"] = load_classifier(teacher_run)
    table = speed_table(models, waves, sample_rate)
    if teacher == "dnsmos":
        from . import dnsmos

        timed = [load_audio(p, dnsmos.SR).numpy() for p in list(paths)[:dnsmos_clips]]
        table.loc["teacher"] = [np.nan, np.nan, dnsmos.realtime_factor(timed)]
    if "teacher" not in table.index:
        return table, "no teacher to time"
    faster = table.loc["student", "x faster than teacher"] if "x faster than teacher" in table \
        else table.loc["student", "x real time"] / table.loc["teacher", "x real time"]
    fewer = table.loc["teacher", "parameters"] / table.loc["student", "parameters"]
    line = (f"the student is {faster:.1f}x faster than the {'DNSMOS ' if teacher == 'dnsmos' else ''}teacher"
            + (f" with {fewer:.0f}x fewer parameters" if np.isfinite(fewer) else ""))
    return table, line
