"""A real-speech corpus from Debian packages: fetch them, screen the recordings, record sources and
licences, and mix labelled clips plus an unlabelled transfer set.

`make data-real` runs `build_real_corpus`: `packages.fetch_packages` puts the packages under
`data/real/packages/` (no root, no install), `sources.candidate_sources` finds their speech and speaker
groups, `screening.screen_sources` keeps only clean recordings (signal checks and DNSMOS), and
`mixtures.make_mixture_dataset` mixes them with noise into `data/real/clips/`. Beside the clips,
`sources.csv` holds every file's verdict and reason and `SOURCES.md` the packages' versions,
licences and a screening summary. Speakers are grouped as documented in data/README.md, so train,
val and test never share a voice; the transfer set uses train speakers only.
"""
from __future__ import annotations

import math
from pathlib import Path

from ..config import REAL_CLIP_SHARES, REAL_N_CLIPS, REAL_SPEAKER_SECONDS, REAL_TRANSFER_FACTOR
from ..errors import CorpusError
from ..jobs.score import DEFAULT_CACHE
from ..paths import resolve
from .common import deal_splits, write_csv
from .mixtures import make_mixture_dataset
from .packages import fetch_packages, write_licences
from .screening import screen_sources
from .sources import NOISE_PACKAGE, SOURCE_COLUMNS, SPEECH_PACKAGES, candidate_sources, noise_recordings

PACKAGES = tuple(SPEECH_PACKAGES) + (NOISE_PACKAGE,)
MEASURE_COLUMNS = ["level_dbfs", "peak_dbfs", "clipped_share", "stnr_db", "sig", "bak"]
USED_STATUSES = ("candidate", "clean", "rejected")  # rows that were (or are to be) screened


def transfer_size(n_clips: int, factor: float, clip_shares=REAL_CLIP_SHARES) -> int:
    """Clips of the transfer set: `factor` times the labelled train split of `n_clips` clips."""
    return int(round(factor * deal_splits(int(n_clips), clip_shares, at_least=0).count("train")))


def write_sources_csv(path, rows: list[dict], screening: str) -> Path:
    """sources.csv: one row per audio file of the speech packages (SOURCE_COLUMNS, measures, screening)."""
    def cell(v):
        return "" if isinstance(v, float) and math.isnan(v) else (f"{v:.4g}" if isinstance(v, float) else v)

    return write_csv(path, SOURCE_COLUMNS + MEASURE_COLUMNS + ["screening"],
                     [[cell(r.get(c, math.nan)) for c in SOURCE_COLUMNS + MEASURE_COLUMNS]
                      + [screening if r["status"] in USED_STATUSES else ""] for r in rows])


def summary(rows: list[dict]) -> list[dict]:
    """Per package and in all: screened files, minutes and speaker groups, and mean DNSMOS BAK, before
    (all screened files) and after screening (the clean ones)."""
    def stats(rs):
        screened = [r for r in rs if r["status"] in USED_STATUSES]
        clean = [r for r in screened if r["status"] == "clean"]
        def mean_bak(group):  # NaN when no file of the group has a BAK (screened without DNSMOS)
            scored = [r["bak"] for r in group if r["bak"] == r["bak"]]
            return sum(scored) / len(scored) if scored else math.nan
        return {"files": len(screened), "minutes": sum(r["seconds"] for r in screened if r["seconds"] == r["seconds"]) / 60,
                "speakers": len({r["speaker"] for r in screened}), "bak": mean_bak(screened),
                "clean_files": len(clean), "clean_minutes": sum(r["seconds"] for r in clean) / 60,
                "clean_speakers": len({r["speaker"] for r in clean}), "clean_bak": mean_bak(clean)}

    packages = sorted({r["package"] for r in rows})
    return [{"package": p, **stats([r for r in rows if r["package"] == p])} for p in packages] + \
        [{"package": "all", **stats(rows)}]


def summary_markdown(table: list[dict], screening: str) -> str:
    """The screening summary as a markdown table (goes into SOURCES.md and is printed)."""
    lines = [f"## Screening of the dry sources ({screening})", "",
             "| package | files | minutes | speaker groups | mean BAK | clean files | clean minutes | clean groups "
             "| mean BAK (clean) |", "|---|---|---|---|---|---|---|---|---|"]
    bak = lambda v: "-" if v != v else f"{v:.2f}"  # noqa: E731  (no DNSMOS score: "-", not 0)
    for t in table:
        lines.append(f"| {t['package']} | {t['files']} | {t['minutes']:.1f} | {t['speakers']} | {bak(t['bak'])} "
                     f"| {t['clean_files']} | {t['clean_minutes']:.1f} | {t['clean_speakers']} | {bak(t['clean_bak'])} |")
    return "\n".join(lines) + "\n"


def build_real_corpus(out_dir="data/real", n_clips: int = REAL_N_CLIPS, seed: int = 0, clip_seconds: float = 2.0,
                      transfer_factor: float = REAL_TRANSFER_FACTOR, speaker_seconds: float = REAL_SPEAKER_SECONDS,
                      cache_dir=None, use_dnsmos: bool | None = None, engine: str = "local",
                      workers: int | None = None, packages=PACKAGES, progress: bool = True) -> Path:
    """Fetch the packages into `out_dir/packages/`, screen their speech, and mix `n_clips` labelled clips
    plus `transfer_factor` x the labelled train split of unlabelled train clips into `out_dir/clips/`.

    `speaker_seconds`: seconds of candidate speech screened per speaker group. `cache_dir`: the DNSMOS
    content cache (default data/cache in the repository, shared with notebook 02). `use_dnsmos`:
    None screens with DNSMOS when the extra is installed. `engine`/`workers`: as the corpus jobs."""
    out_dir = Path(out_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else resolve(DEFAULT_CACHE)
    roots = fetch_packages(out_dir / "packages", packages, progress=progress)
    if NOISE_PACKAGE not in roots:
        raise CorpusError(f"the corpus needs its noise package {NOISE_PACKAGE}")
    rows = candidate_sources(roots, speaker_seconds)
    screening = screen_sources(rows, cache_dir, use_dnsmos=use_dnsmos, engine=engine, workers=workers,
                               progress=progress)
    clean = [r for r in rows if r["status"] == "clean"]
    if len({r["speaker"] for r in clean}) < 3:
        raise CorpusError(f"screening left {len(clean)} clean file(s) of fewer than 3 speaker groups")
    clips = make_mixture_dataset([r["path"] for r in clean], noise_recordings(roots), out_dir / "clips", seed=seed,
                                 n_clips=n_clips, clip_seconds=clip_seconds, speakers=[r["speaker"] for r in clean],
                                 n_transfer=transfer_size(n_clips, transfer_factor), clip_shares=REAL_CLIP_SHARES,
                                 progress=progress)
    write_sources_csv(clips / "sources.csv", rows, screening)
    table = summary(rows)
    per_file = {NOISE_PACKAGE: [Path(f).name for f in noise_recordings(roots)]}
    write_licences(clips, roots, per_file, extra=summary_markdown(table, screening))
    if progress:
        print(summary_markdown(table, screening))
    return clips
