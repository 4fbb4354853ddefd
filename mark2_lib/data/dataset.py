"""A dataset in memory (`Dataset`: clips, features, soft labels, truth, cache key) with `open_dataset`
for a whole data folder, and the PyTorch view of one split (`ClipDataset`, `collate_clips`) that training reads.

Train clips without a hard label (a transfer set, see labels.py) learn from their teacher soft labels
only: each item says whether it has a hard label (`has_label`; `label_mask` in a batch), and its label
(UNLABELLED) is never read by the loss. A clip with neither a hard nor a soft label is a DataError naming
it, raised where the soft labels are joined (`open_dataset`) and where a run picks its clips
(`training_clips`: with alpha = 0 unlabelled clips are left out of training, saying so).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import AudioConfig
from ..errors import DataError
from .features import FeatureCache, file_sha1
from .labels import Manifest, load_labels
from .soft_labels import SoftLabels, load_soft_labels


# ----------------------------------------------------------------------------- dataset

class ClipDataset(torch.utils.data.Dataset):
    """One item per clip: its features, hard label (masked: `has_label`) and (masked) teacher soft labels."""

    def __init__(self, manifest: Manifest, features: dict[str, np.ndarray], soft: SoftLabels | None = None):
        self.clip_ids = manifest.clip_ids
        self.labels = manifest.df["label"].astype(int).tolist()  # labels.UNLABELLED where has_label is False
        self.has_label = manifest.labelled.tolist()
        missing = [c for c in self.clip_ids if c not in features]
        if missing:
            raise KeyError(f"no features for {len(missing)} clip(s), e.g. {missing[:5]}")
        self.features = {c: features[c] for c in self.clip_ids}
        self.soft = (soft or SoftLabels()).restrict(self.clip_ids)
        for clip_id, segs in self.soft.segment.items():
            n = self.features[clip_id].shape[0]
            if max(segs) >= n:
                raise DataError(f"soft labels ({', '.join(self.soft.source)}): clip_id {clip_id!r} has a label "
                                f"for segment {max(segs)} but the clip has {n} segment(s) (0..{n - 1})")

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __getitem__(self, i: int) -> dict:
        clip_id = self.clip_ids[i]
        x = torch.from_numpy(np.array(self.features[clip_id], dtype=np.float32))  # copy out of the memmap
        n = x.shape[0]
        soft_clip, soft_segment = torch.zeros(2), torch.zeros(n, 2)
        soft_segment_mask = torch.zeros(n, dtype=torch.bool)
        if clip_id in self.soft.clip:
            soft_clip = torch.as_tensor(self.soft.clip[clip_id], dtype=torch.float32)
        for s, p in self.soft.segment.get(clip_id, {}).items():
            soft_segment[s] = torch.as_tensor(p, dtype=torch.float32)
            soft_segment_mask[s] = True
        return dict(features=x, label=torch.tensor(self.labels[i], dtype=torch.long),
                    has_label=torch.tensor(self.has_label[i]),
                    soft_clip=soft_clip, soft_clip_mask=torch.tensor(clip_id in self.soft.clip),
                    soft_segment=soft_segment, soft_segment_mask=soft_segment_mask,
                    clip_id=clip_id, index=i)

    def __getstate__(self):
        # DataLoader workers started by spawn (macOS, Windows) pickle the dataset: send the
        # memmaps' file names, not a copy of every feature array.
        state = dict(self.__dict__)
        state["features"] = {c: getattr(x, "filename", None) or x for c, x in self.features.items()}
        return state

    def __setstate__(self, state):
        state["features"] = {c: np.load(x, mmap_mode="r") if isinstance(x, (str, os.PathLike)) else x
                             for c, x in state["features"].items()}
        self.__dict__.update(state)


def collate_clips(batch: list[dict]) -> dict:
    """Stack items, zero-padding the segment axis to the longest clip; masks mark real segments
    (`segment_mask`), teacher labels (`soft_*_mask`) and hard labels (`label_mask`)."""
    n = [b["features"].shape[0] for b in batch]
    B, S = len(batch), max(n)
    features = batch[0]["features"].new_zeros((B, S) + tuple(batch[0]["features"].shape[1:]))
    segment_mask = torch.zeros(B, S, dtype=torch.bool)
    soft_segment, soft_segment_mask = torch.zeros(B, S, 2), torch.zeros(B, S, dtype=torch.bool)
    for i, (b, k) in enumerate(zip(batch, n)):
        features[i, :k] = b["features"]
        segment_mask[i, :k] = True
        soft_segment[i, :k] = b["soft_segment"]
        soft_segment_mask[i, :k] = b["soft_segment_mask"]
    return dict(features=features, segment_mask=segment_mask,
                label=torch.stack([b["label"] for b in batch]),
                label_mask=torch.stack([b["has_label"] for b in batch]),
                soft_clip=torch.stack([b["soft_clip"] for b in batch]),
                soft_clip_mask=torch.stack([b["soft_clip_mask"] for b in batch]),
                soft_segment=soft_segment, soft_segment_mask=soft_segment_mask,
                clip_id=[b["clip_id"] for b in batch],
                index=torch.tensor([b["index"] for b in batch], dtype=torch.long))


# ----------------------------------------------------------------------------- a data folder in memory

@dataclass
class Dataset:
    """Everything training and evaluation read about one dataset: clips, features, soft labels, truth."""

    manifest: Manifest                 # labels.csv: every usable clip with its label and split
    features: dict[str, np.ndarray]    # clip_id -> cached log-mel features [segments, n_mels, frames]
    soft: SoftLabels | None = None     # the teachers' soft labels; None when there are none
    truth: pd.DataFrame | None = None  # truth.csv of synthetic data (what each clip really is); else None
    key: str = ""                      # names exactly this data in run names (see open_dataset); "" if unnamed

    def split(self, name: str) -> Manifest:
        """The clips of one split: "train", "val" or "test"."""
        return self.manifest.split(name)

    def teacher_p_noise(self, clip_ids) -> np.ndarray:
        """The teachers' clip-level P(noise) of each clip; DataError when there are no soft labels for one."""
        if self.soft is None:
            raise DataError("this dataset has no soft labels: run 02_teacher_soft_labels.ipynb first")
        return self.soft.p_noise(clip_ids)


def without_soft_label(manifest: Manifest, soft: SoftLabels | None, segments: bool = True) -> list[str]:
    """clip_ids of the clips of `manifest` with neither a hard label nor a teacher soft label (one for the
    whole clip, or with `segments` one for any of its segments)."""
    soft = soft or SoftLabels()
    return [c for c, has in zip(manifest.clip_ids, manifest.labelled)
            if not has and c not in soft.clip and not (segments and soft.segment.get(c))]


def require_a_label(manifest: Manifest, soft: SoftLabels | None, segments: bool = True, why: str = "") -> None:
    """DataError naming (clip_id and labels.csv row) every clip of `manifest` that `without_soft_label` finds."""
    missing = set(without_soft_label(manifest, soft, segments))
    if missing:
        df = manifest.df[manifest.df["clip_id"].isin(missing)]
        named = [f"{c!r} (row {r})" for c, r in zip(df["clip_id"], df["row"])]
        more = f" and {len(named) - 10} more" if len(named) > 10 else ""
        source = f" in {', '.join(soft.source)}" if soft is not None and soft.source else ""
        raise DataError(f"{manifest.root / 'labels.csv'}: {len(named)} clip(s) have neither a hard label nor a "
                        f"teacher soft label{source}{why}: {', '.join(named[:10])}{more}; give them a label or a "
                        f"soft label, or leave them out")


def training_clips(train: Manifest, soft: SoftLabels | None, alpha: float, soft_target: str = "clip") -> Manifest:
    """The clips of the train split a run learns from. Unlabelled clips learn from the soft term only:
    with alpha = 0 there is none, so they are left out (a printed note says how many); with alpha > 0 each
    needs a soft label the objective reads (the clip's own, or with soft_target "segment" any segment's),
    else a DataError names them. A fully labelled split is returned as it is."""
    labelled = train.labelled
    if labelled.all():
        return train
    if alpha == 0:
        print(f"train: left out {int((~labelled).sum())} clip(s) without a hard label: alpha = 0 trains on "
              f"hard labels only")
        return Manifest(train.root, train.df[labelled].reset_index(drop=True), train.skipped)
    require_a_label(train, soft, segments=soft_target == "segment", why=(
        " (soft_target 'clip' reads the clip-level soft label)" if soft_target != "segment" else ""))
    return train


def load_truth(data_dir) -> pd.DataFrame | None:
    """`data_dir/truth.csv` (written with synthetic data: noise type, SNR, the annotator's P(noise) per
    clip_id) as a DataFrame, or None when the folder has none."""
    path = Path(data_dir) / "truth.csv"
    return pd.read_csv(path) if path.is_file() else None


def open_dataset(data_dir, audio_cfg: AudioConfig, cache_dir, soft_labels_csv=None, *, on_error: str = "raise",
                 progress: bool = True) -> Dataset:
    """labels.csv + cached features + soft labels + truth.csv of a data folder, and a key naming exactly this data.

    `soft_labels_csv`: a CSV path or list of them; None uses `data_dir/soft_labels.csv` when it exists.
    The key hashes labels.csv, the soft labels and the AudioConfig, so cached runs are reused only
    for identical data. With soft labels, every clip without a hard label must have one (DataError naming
    those that have none); without soft labels such clips wait for a teacher (training checks them again).
    """
    data_dir = Path(data_dir)
    manifest = load_labels(data_dir / "labels.csv", on_error=on_error, sample_rate=audio_cfg.sample_rate)
    features = FeatureCache(cache_dir, audio_cfg).features(manifest, progress=progress)
    if soft_labels_csv is None and (data_dir / "soft_labels.csv").is_file():
        soft_labels_csv = data_dir / "soft_labels.csv"
    soft = load_soft_labels(soft_labels_csv, manifest, on_error=on_error) if soft_labels_csv else None
    if soft is not None:
        require_a_label(manifest, soft)
    files = [data_dir / "labels.csv"] + ([Path(p) for p in soft.source] if soft else [])
    key = hashlib.sha1("|".join([audio_cfg.key()] + [file_sha1(f) for f in files]).encode()).hexdigest()[:12]
    return Dataset(manifest, features, soft, load_truth(data_dir), key)
