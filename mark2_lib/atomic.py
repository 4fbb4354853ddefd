"""Atomic file writes: a temp file in the same folder, then os.replace, so no reader ever sees half a file."""
from __future__ import annotations

import os
import uuid
from pathlib import Path


def atomic_write(path, write, mode: str = "wb") -> Path:
    """Call `write(f)` on a temp file opened with `mode`, then move it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x" + mode.replace("w", "")) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(text: str, path) -> Path:
    return atomic_write(path, lambda f: f.write(text), mode="w")


def atomic_save(obj, path) -> Path:
    """torch.save (state_dicts and plain values only) through a temp file."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))
