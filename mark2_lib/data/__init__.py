"""Data in: labels.csv (labels.py), teachers' soft labels (soft_labels.py), the log-mel feature cache
(features.py), and a whole data folder in memory (`open_dataset` -> `Dataset`) with the PyTorch dataset
that training reads (dataset.py).

Users bring a folder of audio files plus a `labels.csv` (format: data/README.md).
"""
from ..errors import DataError
from .dataset import (ClipDataset, Dataset, collate_clips, load_truth, open_dataset, require_a_label, training_clips,
                      without_soft_label)
from .features import FeatureCache, file_sha1
from .labels import LABELS, SPLITS, UNLABELLED, Manifest, check_audio_file, load_labels, parse_label
from .soft_labels import SoftLabels, load_soft_labels, write_soft_labels

__all__ = [
    "DataError", "LABELS", "SPLITS", "UNLABELLED", "parse_label", "check_audio_file", "Manifest", "load_labels",
    "SoftLabels", "load_soft_labels", "write_soft_labels", "file_sha1", "FeatureCache", "ClipDataset",
    "collate_clips", "Dataset", "load_truth", "open_dataset", "without_soft_label", "require_a_label",
    "training_clips",
]
