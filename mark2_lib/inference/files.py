"""Which files a list of paths names: audio files and folders of them (recursively), in argument order."""
from __future__ import annotations

from pathlib import Path

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus")  # matched case-insensitively


def find_audio(paths) -> tuple[list[tuple[Path, str]], int]:
    """Expand files and folders (recursively, sorted) into a list of (file, error), in argument order.

    error is "" for a file to read, or the message for a PATH that does not exist or a folder
    without audio files. A file named directly is always kept, whatever its extension (reading it
    decides). Also returns how many non-audio files inside folders were left out.
    """
    entries, n_ignored, seen = [], 0, set()
    for p in map(Path, [paths] if isinstance(paths, (str, Path)) else paths):
        if p.is_dir():
            found = []
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS:
                    found.append(f)
                elif f.is_file():
                    n_ignored += 1
            if not found:
                entries.append((p, f"{p}: folder holds no audio files ({' '.join(AUDIO_EXTENSIONS)})"))
        elif p.exists():
            found = [p]
        else:
            entries.append((p, f"{p}: file not found"))
            continue
        for f in found:
            if f not in seen:
                seen.add(f)
                entries.append((f, ""))
    return entries, n_ignored
