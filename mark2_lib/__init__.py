"""mark2: distil a large teacher into a tiny, fast noise-vs-clean audio classifier.

Pipeline, one module each: audio -> data -> models -> losses -> train -> evaluate; timing says
what a model costs (parameters, MACs, speed), inference/ classifies new audio files.
"""
__version__ = "0.1.0"

from .config import CLASSES as CLASSES  # class names by index (1 = "noise")


def load_classifier(run_dir):
    """A trained run as a waveform -> clip logits module (see mark2_lib.run_folders.load_classifier)."""
    from .run_folders import load_classifier as _load

    return _load(run_dir)
