"""Where things live: paths resolve against the repository, not the current directory."""
from __future__ import annotations

from pathlib import Path


def repo_root() -> Path:
    """The checkout that holds this package (the folder with pyproject.toml), else the cwd."""
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").exists() and (here / "notebooks").is_dir():
        return here
    return Path.cwd()


def resolve(path) -> Path:
    """An absolute path: relative paths are taken relative to the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (repo_root() / p).resolve()


DEFAULT_DATA = "data/default"          # the built-in student dataset
DEFAULT_TEACHER_POOL = "data/teacher_pool"  # the larger, separate pool the default teacher learns from
RUNS = "runs"                          # one folder per training run
