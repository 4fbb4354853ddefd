"""The feature cache: log-mel features on disk, keyed by audio content and AudioConfig, read back memory-mapped."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import audio
from ..atomic import atomic_write
from ..config import AudioConfig
from ..errors import DataError
from .labels import Manifest


def file_sha1(path: str | Path) -> str:
    """sha1 of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


class FeatureCache:
    """Log-mel features on disk, keyed by audio content + AudioConfig, read back memory-mapped."""

    def __init__(self, root: str | Path, cfg: AudioConfig):
        self.root, self.cfg = Path(root), cfg
        self.dir = self.root / cfg.key()

    def path_for(self, audio_path: str | Path) -> Path:
        return self.dir / f"{file_sha1(audio_path)}.npy"

    def features(self, manifest: Manifest, progress: bool = True) -> dict[str, np.ndarray]:
        """clip_id -> read-only memmap [S, n_mels, frames], computing what is not cached yet."""
        clips = list(zip(manifest.df["clip_id"], manifest.df["path"]))
        target = {clip_id: self.path_for(audio_path) for clip_id, audio_path in clips}
        todo = {}  # cache file -> (clip_id, audio path); clips with identical bytes share one
        for clip_id, audio_path in clips:
            if not target[clip_id].is_file():
                todo.setdefault(target[clip_id], (clip_id, audio_path))
        n_todo = sum(t in todo for t in target.values())
        print(f"features: {len(target) - n_todo} of {len(target)} clips cached, "
              f"{len(todo)} file(s) to compute ({self.dir})")
        if todo:
            self.dir.mkdir(parents=True, exist_ok=True)
            config = self.dir / "audio_config.json"
            if not config.is_file():
                atomic_write(config, lambda f: json.dump(self.cfg.to_dict(), f, indent=1), mode="w")
            logmel = audio.LogMel(self.cfg)
            for t, (clip_id, audio_path) in tqdm(todo.items(), desc="log-mel", unit="clip", disable=not progress):
                self._compute(clip_id, audio_path, t, logmel)
        return {c: np.load(t, mmap_mode="r") for c, t in target.items()}

    def _compute(self, clip_id: str, audio_path: str, out: Path, logmel: audio.LogMel):
        try:
            wave = audio.load_audio(audio_path, self.cfg.sample_rate)
        except DataError as e:
            raise DataError(f"clip_id {clip_id!r}: {e}") from None
        feats = audio.clip_features(wave, self.cfg, logmel).numpy().astype(np.float32, copy=False)
        atomic_write(out, lambda f: np.save(f, feats))
