"""Many runs at once: the alpha x T sweep and the KD vs hard-only comparison, reusing finished runs."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .config import RUNTIME_FIELDS, AudioConfig, ModelConfig, TrainConfig
from .data import Manifest, SoftLabels
from .evaluate import mean_std_table, predict_features
from .metrics import classification_metrics
from .models import load_classifier
from .train import train_run


def run_name(prefix: str, cfg: TrainConfig, audio: AudioConfig, model_cfg: ModelConfig, data_key: str) -> str:
    """`prefix-<hash>`: the hash covers everything that changes the result, so runs are reused safely."""
    train = {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_FIELDS}
    blob = json.dumps([train, audio.to_dict(), model_cfg.to_dict(), data_key], sort_keys=True, default=str)
    return f"{prefix}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"


def cached_train(root, prefix: str, manifest: Manifest, features: dict, soft: SoftLabels | None,
                 cfg: TrainConfig, audio: AudioConfig, model_cfg: ModelConfig, data_key: str) -> dict:
    """Train a run unless a finished one with the same settings exists; returns its summary."""
    run_dir = Path(root) / run_name(prefix, cfg, audio, model_cfg, data_key)
    done = run_dir / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    return train_run(run_dir, manifest, features, soft, cfg, audio, model_cfg, resume=True,
                     extra_config={"data_key": data_key})


def alpha_temperature_sweep(root, alphas, temperatures, manifest: Manifest, features: dict, soft: SoftLabels,
                            base: TrainConfig, audio: AudioConfig, model_cfg: ModelConfig, data_key: str,
                            progress: bool = True) -> pd.DataFrame:
    """Train (or reuse) one student per (alpha, T); alpha = 0 ignores T, so it is trained once."""
    grid = [(float(a), float(t)) for a in alphas for t in temperatures]
    rows, by_key = [], {}
    quiet = dataclasses.replace(base, progress=False)
    for a, t in tqdm(grid, desc="alpha x T sweep", disable=not progress):
        key = (a, t if a > 0 else None)
        if key not in by_key:
            cfg = dataclasses.replace(quiet, alpha=a, temperature=t if a > 0 else base.temperature)
            by_key[key] = cached_train(root, f"a{a:g}_T{t if a > 0 else 'any'}", manifest, features, soft,
                                       cfg, audio, model_cfg, data_key)
        res = by_key[key]
        rows.append({"alpha": a, "temperature": t, "run_dir": res["run_dir"], "best_epoch": res["best_epoch"],
                     "epochs_run": res["epochs_run"], **res["best"]})
    return pd.DataFrame(rows)


def test_predictions(run_dir, test: Manifest, features: dict) -> np.ndarray:
    """P(noise) of a finished run on the given clips."""
    return predict_features(load_classifier(run_dir).model, test, features)["p_noise"]


def compare_kd(root, manifest: Manifest, features: dict, soft: SoftLabels, base: TrainConfig,
               audio: AudioConfig, model_cfg: ModelConfig, data_key: str, seeds=(0, 1, 2),
               kd: tuple[float, float] = (0.7, 4.0), progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train the KD student and the hard-only student (alpha = 0, same budget) for each seed and score
    them with the teacher on the test split. Returns (per-seed metrics with each run_dir, mean ± std summary)."""
    test = manifest.split("test")
    y = test.df["label"].to_numpy()
    rows = []
    jobs = [(s, name, a) for s in seeds for name, a in (("kd_student", kd[0]), ("hard_only_student", 0.0))]
    for seed, name, alpha in tqdm(jobs, desc="KD vs hard-only", disable=not progress):
        cfg = dataclasses.replace(base, alpha=alpha, temperature=kd[1], seed=seed, progress=False)
        res = cached_train(root, f"{name}_s{seed}", manifest, features, soft, cfg, audio, model_cfg, data_key)
        p = test_predictions(res["run_dir"], test, features)
        rows.append({"model": name, "seed": seed, "run_dir": res["run_dir"], **classification_metrics(y, p)})
    p_teacher = np.array([soft.clip[c][1] for c in test.clip_ids])
    rows.append({"model": "teacher", "seed": None, "run_dir": None, **classification_metrics(y, p_teacher)})
    per_seed = pd.DataFrame(rows)
    return per_seed, mean_std_table(per_seed)


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
