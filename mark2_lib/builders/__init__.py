"""Dataset builders: the synthetic default data (signals.py, synth.py), mixtures of real recordings
(mixtures.py), the real-speech corpus from Debian packages (corpus.py) and what they share (common.py)."""
