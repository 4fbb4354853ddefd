"""Many runs at once: the alpha x T sweep and the KD vs hard-only comparison, reusing finished runs, and how
close those runs are to their teacher (agreement, correlation, ROC-AUC per SNR band)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .config import AudioConfig, ModelConfig, TrainConfig
from .data import Dataset
from .baselines import noise_score
from .evaluate import mean_std_table, predict_features, snr_band_auc, teacher_agreement
from .metrics import classification_metrics
from .run_folders import load_classifier, run_name
from .train import train_run

__all__ = ["run_name", "cached_train", "alpha_temperature_sweep", "test_predictions", "compare_kd", "teacher_band_report",
           "grid_values"]


def cached_train(root, prefix: str, data: Dataset, cfg: TrainConfig, audio: AudioConfig,
                 model_cfg: ModelConfig) -> dict:
    """Train a run in `root/<run_name>` unless a finished one with the same settings exists; returns its summary."""
    run_dir = Path(root) / run_name(prefix, cfg, audio, model_cfg, data.key)
    done = run_dir / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    return train_run(run_dir, data, cfg, audio, model_cfg, resume=True, extra_config={"data_key": data.key})


def alpha_temperature_sweep(root, alphas, temperatures, data: Dataset, base: TrainConfig, audio: AudioConfig,
                            model_cfg: ModelConfig, progress: bool = True) -> pd.DataFrame:
    """Train (or reuse) one student per (alpha, T); alpha = 0 ignores T, so it is trained once."""
    grid = [(float(a), float(t)) for a in alphas for t in temperatures]
    rows, by_key = [], {}
    quiet = dataclasses.replace(base, progress=False)
    for a, t in tqdm(grid, desc="alpha x T sweep", disable=not progress):
        key = (a, t if a > 0 else None)
        if key not in by_key:
            cfg = dataclasses.replace(quiet, alpha=a, temperature=t if a > 0 else base.temperature)
            by_key[key] = cached_train(root, f"a{a:g}_T{t if a > 0 else 'any'}", data, cfg, audio, model_cfg)
        res = by_key[key]
        rows.append({"alpha": a, "temperature": t, "run_dir": res["run_dir"], "best_epoch": res["best_epoch"],
                     "epochs_run": res["epochs_run"], **res["best"]})
    return pd.DataFrame(rows)


def test_predictions(run_dir, data: Dataset) -> np.ndarray:
    """P(noise) of a finished run on the test clips of `data`."""
    return predict_features(load_classifier(run_dir).model, data.split("test"), data.features)["p_noise"]


def compare_kd(root, data: Dataset, base: TrainConfig, audio: AudioConfig, model_cfg: ModelConfig, seeds=(0, 1, 2),
               kd: tuple[float, float] = (0.7, 4.0), progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train the KD student and the hard-only student (alpha = 0, same budget) for each seed and score
    them with the teacher on the test split. Returns (per-seed metrics with each run_dir, mean ± std summary)."""
    test = data.split("test")
    y = test.df["label"].to_numpy()
    rows = []
    jobs = [(s, name, a) for s in seeds for name, a in (("kd_student", kd[0]), ("hard_only_student", 0.0))]
    for seed, name, alpha in tqdm(jobs, desc="KD vs hard-only", disable=not progress):
        cfg = dataclasses.replace(base, alpha=alpha, temperature=kd[1], seed=seed, progress=False)
        res = cached_train(root, f"{name}_s{seed}", data, cfg, audio, model_cfg)
        p = test_predictions(res["run_dir"], data)
        rows.append({"model": name, "seed": seed, "run_dir": res["run_dir"], **classification_metrics(y, p)})
    p_teacher = data.teacher_p_noise(test.clip_ids)
    rows.append({"model": "teacher", "seed": None, "run_dir": None, **classification_metrics(y, p_teacher)})
    per_seed = pd.DataFrame(rows)
    return per_seed, mean_std_table(per_seed)


def teacher_band_report(per_seed: pd.DataFrame, data: Dataset, baselines: pd.DataFrame | None = None,
                        baseline_clips: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """On the test split, for each run of `compare_kd`'s `per_seed`, its teacher and (given `baseline_report`'s
    table and clips) each blind estimator: agreement and Pearson correlation with the teacher's calibrated
    P(noise) (`evaluate.teacher_agreement`; an estimator's score is -SNR with its fitted threshold) and, where
    the data has a truth.csv, ROC-AUC per SNR band against the clean clips (`evaluate.snr_band_auc`).
    Returns (one row per run, mean ± std per model)."""
    test = data.split("test")
    p_teacher = data.teacher_p_noise(test.clip_ids)
    runs = []  # (model, seed, noise score, threshold)
    for r in per_seed.itertuples():
        score = p_teacher if r.model == "teacher" else test_predictions(r.run_dir, data)
        runs.append((r.model, r.seed, score, 0.5))
    if baselines is not None:
        clips = baseline_clips.set_index("clip_id").loc[list(test.clip_ids)]
        for name, threshold_db in baselines["snr_threshold_db"].items():
            runs.append((name, None, noise_score(clips[f"{name.removesuffix('_baseline')}_db"]), -threshold_db))
    rows = [{"model": m, "seed": s, **teacher_agreement(score, p_teacher, threshold)} for m, s, score, threshold in runs]
    table = pd.DataFrame(rows)
    if data.truth is not None:
        bands = snr_band_auc({i: run[2] for i, run in enumerate(runs)}, test.clip_ids, data.truth)
        table = pd.concat([table, bands.add_prefix("auc").reset_index(drop=True)], axis=1)
    return table, mean_std_table(table)


def grid_values(value, name: str) -> list[float]:
    """A list of floats from a list, or from text such as "0, 0.5, 1" or "[1, 2]" (papermill -p passes text)."""
    items = value.strip("[] ").split(",") if isinstance(value, str) else list(value)
    try:
        out = [float(v) for v in items if str(v).strip()]
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a list of numbers, e.g. [0, 0.5, 1]") from None
    if not out:
        raise ValueError(f"{name} is empty")
    return out
