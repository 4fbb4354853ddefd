"""Early stopping on a monitored validation metric, with PyTorch Lightning's semantics."""
from __future__ import annotations

import math
import numbers

_STATE_KEYS = ("monitor", "mode", "patience", "min_delta", "best", "best_epoch",
               "wait", "epoch", "should_stop", "stop_reason")


class EarlyStopping:
    """Stop when `monitor` has not improved by more than |min_delta| for `patience` epochs.

    - improvement is strict: mode="min" needs value < best - |min_delta|, mode="max"
      needs value > best + |min_delta|; a tie (or a gain of exactly |min_delta|) is no
      improvement. The first finite value always improves.
    - each non-improving epoch adds 1 to `wait`, an improvement resets it to 0; stop once
      wait >= patience (patience=0 stops at the first non-improving epoch).
    - NaN or +/-inf stops at once.
    - epochs are the 0-based count of `step` calls; `best_epoch` indexes the best one;
      `stop_reason` counts epochs from 1, as history.csv and the training summary do.
    - once stopped, further `step` calls change nothing and return True.
    - `state_dict()` is plain Python values (torch.load(weights_only=True) safe);
      `load_state_dict` restores settings and counters, so a resumed run stops exactly
      where an uninterrupted one would.
    """

    def __init__(self, patience: int = 10, min_delta: float = 0.0, mode: str = "min",
                 monitor: str = "val_loss"):
        self.patience, self.min_delta, self.mode, self.monitor = _check_args(patience, min_delta, mode, monitor)
        self.best: float | None = None       # best value seen; None before the first finite one
        self.best_epoch: int | None = None   # index of the step that gave `best`
        self.wait = 0                        # non-improving epochs since the last improvement
        self.epoch = 0                       # number of step() calls so far = next epoch index
        self.should_stop = False
        self.stop_reason: str | None = None

    def __repr__(self) -> str:
        return (f"EarlyStopping(monitor={self.monitor!r}, mode={self.mode!r}, patience={self.patience}, "
                f"min_delta={self.min_delta}, best={self.best}, best_epoch={self.best_epoch}, "
                f"wait={self.wait}, should_stop={self.should_stop})")

    def improves(self, value: float) -> bool:
        """Would `value` count as an improvement over the current best?"""
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        # written as Lightning evaluates it (value -/+ delta vs best), so rounding agrees too
        if self.mode == "min":
            return value + self.min_delta < self.best
        return value - self.min_delta > self.best

    def step(self, value) -> bool:
        """Record one epoch's monitored value; True when training should stop."""
        if self.should_stop:
            return True
        value = _to_float(value)
        epoch, self.epoch = self.epoch, self.epoch + 1
        if not math.isfinite(value):
            self.should_stop = True
            self.stop_reason = f"monitored value {self.monitor} is {value} at epoch {epoch + 1}"
        elif self.improves(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.should_stop = True
                self.stop_reason = (
                    f"{self.monitor} did not improve by more than {self.min_delta} for {self.wait} "
                    f"epoch{'' if self.wait == 1 else 's'} (best {self.best:.6g} at epoch {self.best_epoch + 1})")
        return self.should_stop

    def state_dict(self) -> dict:
        """Settings and counters as plain Python values, saved in each checkpoint."""
        return {k: getattr(self, k) for k in _STATE_KEYS}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` saved, so a resumed run stops where an uninterrupted one would."""
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise ValueError(f"EarlyStopping state_dict is missing keys {missing}")
        self.patience, self.min_delta, self.mode, self.monitor = _check_args(
            state["patience"], state["min_delta"], state["mode"], state["monitor"])
        best, best_epoch = state["best"], state["best_epoch"]
        self.best = None if best is None else float(best)
        self.best_epoch = None if best_epoch is None else int(best_epoch)
        self.wait, self.epoch = int(state["wait"]), int(state["epoch"])
        self.should_stop = bool(state["should_stop"])
        self.stop_reason = None if state["stop_reason"] is None else str(state["stop_reason"])


def _check_args(patience, min_delta, mode, monitor):
    """The settings, checked and normalised (min_delta as its absolute value)."""
    if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) or patience < 0:
        raise ValueError(f"patience must be an int >= 0, got {patience!r}")
    if isinstance(min_delta, bool) or not isinstance(min_delta, numbers.Real) or not math.isfinite(min_delta):
        raise ValueError(f"min_delta must be a finite number, got {min_delta!r}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if not isinstance(monitor, str) or not monitor:
        raise ValueError(f"monitor must be a non-empty string, got {monitor!r}")
    return int(patience), abs(float(min_delta)), mode, monitor


def _to_float(value) -> float:
    """Python number, numpy scalar or one-element tensor -> float."""
    if hasattr(value, "item"):
        try:
            value = value.item()
        except (RuntimeError, ValueError):
            raise ValueError(f"monitored value must be a single number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"monitored value must be a real number, got {value!r}")
    return float(value)
