"""Temperature scaling (Guo et al. 2017) of a teacher before it writes soft labels.

Its temperature is the *calibration temperature*: one scalar fitted on held-out clips so that the
teacher's probabilities are calibrated. It is not the distillation temperature T of the loss
(`TrainConfig.temperature`), which softens the teacher's probabilities again during training.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from .data import Manifest
from .evaluate import predict_features
from .metrics import expected_calibration_error
from .models import ClipClassifier


def fit_calibration_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The calibration temperature: the T > 0 that minimises the NLL of softmax(logits / T) on held-out clips."""
    logits = torch.as_tensor(logits, dtype=torch.float64)
    labels = torch.tensor(np.asarray(labels), dtype=torch.long)

    def nll(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(logits / np.exp(log_t), labels))

    return float(np.exp(minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded").x))


def calibrated_predictions(model: ClipClassifier, manifest: Manifest, features: dict,
                           calibration: tuple[Manifest, dict] | None = None) -> tuple[dict, dict]:
    """`evaluate.predict_features` of `model` on `manifest`, after temperature scaling fitted on
    `calibration=(val_manifest, val_features)` when given; and {"calibration_temperature" (1.0 without
    calibration), "ece_before", "ece_after" (the ECE on the calibration clips, None without)}."""
    info = {"calibration_temperature": 1.0, "ece_before": None, "ece_after": None}
    if calibration is not None:
        cal_m, cal_f = calibration
        pred = predict_features(model, cal_m, cal_f)
        y = cal_m.df["label"].to_numpy()
        t = fit_calibration_temperature(pred["logits"], y)
        p_after = torch.softmax(torch.as_tensor(pred["logits"]) / t, dim=-1)[:, 1].numpy()
        info.update(calibration_temperature=t, ece_before=expected_calibration_error(y, pred["p_noise"]),
                    ece_after=expected_calibration_error(y, p_after))
    pred = predict_features(model, manifest, features, calibration_temperature=info["calibration_temperature"])
    return pred, info
