"""Process memory figures from /proc (Linux), shared by the benchmarks."""
from __future__ import annotations

from pathlib import Path


def status_kb(key: str) -> int:
    """A /proc/self/status field in kB (VmRSS, VmHWM, RssAnon, RssFile, ...); 0 when absent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> bool:
    """Reset the RSS high-water mark (VmHWM, and so ru_maxrss) to the current RSS; False where the
    kernel does not allow it (before Linux 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
