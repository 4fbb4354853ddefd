"""Seeding and the random state a checkpoint carries, so a resumed run draws the same numbers as an
uninterrupted one (dropout, random segments, SpecAugment masks)."""
from __future__ import annotations

import ast
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The three global generators' state as tensors and plain values (torch.load(weights_only=True) safe)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": repr(random.getstate()),
    }


def set_rng_state(state: dict) -> None:
    """Restore the generators from `rng_state()`'s output."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), gauss))
    random.setstate(ast.literal_eval(state["python"]))
