"""Screening of the dry source recordings: a file counts as clean speech only when it is.

Each candidate gets signal checks (`signal_problem`, in this order: unreadable, digital silence, too
short, clipped, too quiet) and, with the `dnsmos` extra, DNSMOS P.835 of the dry file: background
BAK >= BAK_MIN and speech SIG >= SIG_MIN (`screen_sources`). Without the extra, a blind SNR
(`baselines.stnr_snr` >= STNR_MIN_DB) stands in for BAK, and the result says so. DNSMOS scores go
through the content cache (`<cache_dir>/dnsmos/`, shared with notebook 02) and the corpus-job
engines (`jobs.shards.run_sharded` with `DnsmosSpec`: "local" runs one model per core), so a rebuild
rescores nothing. The first failed check is the file's reason; a clean file's reason is empty.
"""
from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..audio import read_audio
from ..baselines import stnr_snr
from ..errors import DataError

MIN_SECONDS = 0.25     # sound (after trimming leading/trailing silence) shorter than this: too short
CLIP_LEVEL = 0.99      # |sample| at or above this is at full scale ...
CLIP_SHARE = 0.001     # ... and more than this share of such samples: clipped
MIN_LEVEL_DBFS = -40.0  # active speech level (10 ms frames within 40 dB of the loudest) below this: too quiet
BAK_MIN = 3.5          # DNSMOS background score below this: noisy background
SIG_MIN = 2.7          # DNSMOS speech score below this: distorted speech
STNR_MIN_DB = 30.0     # without DNSMOS: blind SNR below this: noisy
FRAME_SECONDS = 0.01


def signal_measures(x: np.ndarray, sr: int) -> dict:
    """Duration, sound duration, active level, peak, clipped share and blind SNR of a mono waveform."""
    hop = max(int(sr * FRAME_SECONDS), 1)
    n = len(x) // hop
    energy = np.mean(x[:n * hop].reshape(n, hop) ** 2, axis=1) if n else np.zeros(0)
    active = energy >= energy.max() * 1e-4 if n and energy.max() > 0 else np.zeros(n, bool)
    loud = np.flatnonzero(active)
    level = 10 * math.log10(energy[active].mean()) if active.any() else -math.inf
    return {"seconds": len(x) / sr, "sound_seconds": (loud[-1] - loud[0] + 1) * hop / sr if len(loud) else 0.0,
            "level_dbfs": level, "peak_dbfs": 20 * math.log10(np.abs(x).max()) if np.any(x) else -math.inf,
            "clipped_share": float(np.mean(np.abs(x) >= CLIP_LEVEL)) if len(x) else 0.0,
            "stnr_db": stnr_snr(x, sr) if np.any(x) else math.nan}


def signal_problem(m: dict) -> str:
    """The first signal check a file fails ("" when it passes), from its `signal_measures`."""
    if m["peak_dbfs"] == -math.inf:
        return "digital silence"
    if m["sound_seconds"] < MIN_SECONDS:
        return f"too short ({m['sound_seconds']:.2f} s of sound < {MIN_SECONDS:g} s)"
    if m["clipped_share"] > CLIP_SHARE:
        return f"clipped ({100 * m['clipped_share']:.2f} % of samples at full scale)"
    if m["level_dbfs"] < MIN_LEVEL_DBFS:
        return f"too quiet (speech at {m['level_dbfs']:.1f} dBFS < {MIN_LEVEL_DBFS:g})"
    return ""


def measure_file(path) -> tuple[dict, str]:
    """(`signal_measures`, problem) of an audio file; an unreadable file's problem says why."""
    try:
        x, sr = read_audio(path, dtype="float64")
    except DataError as e:
        return {}, f"unreadable: {e}"
    if not np.isfinite(x).all():
        return {}, "non-finite samples"
    m = signal_measures(x, sr)
    return m, signal_problem(m)


def dnsmos_available() -> bool:
    """Whether the `dnsmos` extra is installed."""
    try:
        from ..dnsmos import require_dnsmos
        require_dnsmos()
    except ImportError:
        return False
    return True


def dnsmos_scores(paths, cache_dir, engine: str = "local", workers: int | None = None,
                  progress: bool = True) -> dict[str, tuple]:
    """{path: (SIG, BAK, OVR) or an error message} of each dry file: cached ones read back, the rest
    scored on `engine` in shards (as `teacher.score_dnsmos`), every score kept in the content cache."""
    from ..config import AudioConfig
    from ..dnsmos import DnsmosCache
    from ..jobs.engines import check_engine
    from ..jobs.inputs import Item
    from ..jobs.shards import run_sharded
    from ..jobs.teachers import DnsmosSpec

    check_engine(engine, workers)  # a bad engine or worker count fails even when every score is cached
    cache = DnsmosCache(cache_dir, AudioConfig())
    cache.folder.mkdir(parents=True, exist_ok=True)
    paths = sorted(set(map(str, paths)))
    todo = [p for p in paths if not cache.has(p)]
    out: dict[str, tuple | str] = {}
    if todo:
        items = [Item(i, p, p, {}, "sources") for i, p in enumerate(todo)]
        run_engine = "serial" if engine == "local" and len(items) <= 16 else engine
        with tempfile.TemporaryDirectory(prefix="dnsmos-sources-", dir=cache.folder.parent) as tmp:
            rows = run_sharded(items, DnsmosSpec(str(cache_dir)), Path(tmp) / "scores", engine=run_engine,
                               workers=workers, shard_size=16, progress=progress)
        out.update({it.path: r["error"] for it, r in zip(items, rows) if r["error"]})
    for p in paths:
        if p not in out:
            out[p] = tuple(float(v) for v in cache.scores(p)[0]["clip"])
    return out


def screen_sources(rows: list[dict], cache_dir, use_dnsmos: bool | None = None, engine: str = "local",
                   workers: int | None = None, progress: bool = True) -> str:
    """Screen the "candidate" rows (see sources.candidate_sources) in place: status "clean" or "rejected",
    the reason, and the measures (level_dbfs, peak_dbfs, clipped_share, stnr_db, sig, bak).

    `use_dnsmos` None: when the extra is installed. Returns how the files were screened (a sentence)."""
    todo = [r for r in rows if r["status"] == "candidate"]
    for r in tqdm(todo, desc="screening sources", unit="file", disable=not progress):
        m, problem = measure_file(r["path"])
        r.update({k: m.get(k, math.nan) for k in ("level_dbfs", "peak_dbfs", "clipped_share", "stnr_db")})
        if m:
            r["seconds"] = m["seconds"]
        r.update(sig=math.nan, bak=math.nan, reason=problem, status="rejected" if problem else "candidate")
    why_not = ("DNSMOS is not installed (pip install -e '.[dnsmos]')" if use_dnsmos is None and not dnsmos_available()
               else "DNSMOS was turned off (--no-dnsmos)" if use_dnsmos is False else "")
    use_dnsmos = not why_not
    if not use_dnsmos:
        how = (f"signal checks and blind SNR only: {why_not}, so background noise is judged by a blind SNR "
               "estimate, not DNSMOS")
        warnings.warn(f"screening the real corpus's sources with {how}", stacklevel=2)
    else:
        how = f"signal checks and DNSMOS (BAK >= {BAK_MIN:g}, SIG >= {SIG_MIN:g})"
    scores = dnsmos_scores([r["path"] for r in todo if r["status"] == "candidate"], cache_dir, engine, workers,
                           progress) if use_dnsmos else {}
    for r in todo:
        if r["status"] != "candidate":
            continue
        s = scores.get(r["path"])
        if isinstance(s, str):
            r["reason"] = f"DNSMOS could not score it: {s}"
        elif s is not None:
            r["sig"], r["bak"] = s[0], s[1]
            if r["bak"] < BAK_MIN:
                r["reason"] = f"noisy background (DNSMOS BAK {r['bak']:.2f} < {BAK_MIN:g})"
            elif r["sig"] < SIG_MIN:
                r["reason"] = f"distorted speech (DNSMOS SIG {r['sig']:.2f} < {SIG_MIN:g})"
        elif not (r["stnr_db"] >= STNR_MIN_DB):
            r["reason"] = f"noisy (blind SNR {r['stnr_db']:.1f} dB < {STNR_MIN_DB:g})"
        r["status"] = "rejected" if r["reason"] else "clean"
    return how
