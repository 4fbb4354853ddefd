"""The errors mark2 raises for bad input, so a caller can catch them without importing the module that raised."""
from __future__ import annotations


class DataError(ValueError):
    """Bad input data; the message names the file (and CSV row where there is one)."""


class CorpusError(RuntimeError):
    """The real-speech corpus cannot be built: a Debian package could not be fetched or unpacked."""
