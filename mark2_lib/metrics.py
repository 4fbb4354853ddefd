"""Classification metrics on clip probabilities (scikit-learn where it has them)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

ECE_BINS = 15


def expected_calibration_error(y_true, p_noise, n_bins: int = ECE_BINS) -> float:
    """ECE of the predicted class's confidence, equal-width bins over [0.5, 1] confidence (binary)."""
    y_true, p_noise = np.asarray(y_true), np.asarray(p_noise, dtype=np.float64)
    if len(y_true) == 0:
        return float("nan")
    pred = (p_noise >= 0.5).astype(int)
    conf = np.where(pred == 1, p_noise, 1.0 - p_noise)
    correct = (pred == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def ece_floor(p_true, n_draws: int = 200, seed: int = 0) -> tuple[float, float]:
    """(mean, std) ECE of a perfectly calibrated model: labels drawn from `p_true` and scored with
    `p_true` itself. ECE differences smaller than this, on this many clips, are sampling noise."""
    p_true = np.asarray(p_true, dtype=np.float64)
    if len(p_true) == 0 or not np.all((p_true >= 0) & (p_true <= 1)):
        raise ValueError("p_true must be a non-empty array of probabilities in [0, 1]")
    rng = np.random.default_rng(seed)
    eces = [expected_calibration_error((rng.random(len(p_true)) < p_true).astype(int), p_true) for _ in range(n_draws)]
    return float(np.mean(eces)), float(np.std(eces))


def reliability_bins(y_true, p_noise, n_bins: int = ECE_BINS) -> dict:
    """Per-bin mean predicted P(noise), observed noise rate and count, for a reliability diagram."""
    y_true, p_noise = np.asarray(y_true), np.asarray(p_noise, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p_noise, edges[1:-1], right=True), 0, n_bins - 1)
    mean_p, frac, count = [], [], []
    for b in range(n_bins):
        sel = idx == b
        count.append(int(sel.sum()))
        mean_p.append(float(p_noise[sel].mean()) if sel.any() else float("nan"))
        frac.append(float(y_true[sel].mean()) if sel.any() else float("nan"))
    return {"edges": edges, "mean_predicted": np.array(mean_p), "observed": np.array(frac), "count": np.array(count)}


def classification_metrics(y_true, p_noise, threshold: float = 0.5) -> dict:
    """accuracy, macro-F1, ROC-AUC (NaN when one class is absent) and ECE for P(noise) scores."""
    y_true = np.asarray(y_true).astype(int)
    p_noise = np.asarray(p_noise, dtype=np.float64)
    if y_true.shape != p_noise.shape:
        raise ValueError(f"y_true {y_true.shape} and p_noise {p_noise.shape} differ in shape")
    pred = (p_noise >= threshold).astype(int)
    both = len(np.unique(y_true)) == 2
    return {
        "accuracy": float(accuracy_score(y_true, pred)) if len(y_true) else float("nan"),
        "macro_f1": float(f1_score(y_true, pred, average="macro", labels=[0, 1], zero_division=0)),
        "roc_auc": float(roc_auc_score(y_true, p_noise)) if both else float("nan"),
        "ece": expected_calibration_error(y_true, p_noise),
    }


def confusion(y_true, p_noise, threshold: float = 0.5) -> np.ndarray:
    """2x2 confusion matrix, rows = true (clean, noise), columns = predicted."""
    return confusion_matrix(np.asarray(y_true).astype(int), (np.asarray(p_noise) >= threshold).astype(int), labels=[0, 1])
