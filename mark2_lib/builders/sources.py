"""Which files of which Debian packages are recorded human speech, and whose voice each is.

`speech_recording(package, path)` applies one documented rule per package (data/README.md) and gives a
file's speaker group and language, or None for a file that is not speech (a sound effect, a vocoded
or sung voice). `candidate_sources` lists every speech file of the unpacked packages, drops exact
duplicates (same bytes: the first copy is kept), merges speaker groups that share a recording (a
reused file means a shared voice), and keeps up to `speaker_seconds` of each group (files in a fixed
order), so that screening costs the same whatever a package ships. Every file gets a row with its
status: nothing is dropped unrecorded.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import soundfile as sf

from ..errors import CorpusError

AUDIO_SUFFIXES = (".ogg", ".flac", ".wav")
# package: folder of its recordings (relative to the unpacked package)
SPEECH_PACKAGES = {
    "klettres-data": "usr/share/klettres",
    "kajongg": "usr/share/kajongg/voices",
    "fillets-ng-data-cs": "usr/share/games/fillets-ng/sound",
    "fillets-ng-data-nl": "usr/share/games/fillets-ng/sound",
    "ktuberling-data": "usr/share/ktuberling/sounds",
    "hedgewars-data": "usr/share/games/hedgewars/Data/Sounds/voices",
    "tuxpaint-stamps-default": "usr/share/tuxpaint/stamps",
    "gcin-voice": "usr/share/gcin-voice/ogg",
}
NOISE_PACKAGE = "sonic-pi-samples"
# sonic-pi-samples: hiss, hums, ambience and machine loops (no music), each with the annotator class it sounds like
NOISE_SAMPLES = {
    "vinyl_hiss": "white", "ambi_glass_hum": "hum", "ambi_haunted_hum": "hum", "ambi_soft_buzz": "hum",
    "ambi_drone": "fan", "ambi_lunar_land": "fan", "ambi_dark_woosh": "fan", "ambi_sauna": "fan",
    "loop_3d_printer": "fan", "loop_industrial": "clicks", "loop_electric": "clicks",
}
HEDGEWARS_SKIPPED = {"Robot": "vocoded voice", "Singer": "sung, not spoken"}
HEDGEWARS_LANGUAGES = {"Default": "en", "Default_es": "es", "Default_pl": "pl", "Default_ru": "ru"}
TUXPAINT_SPEECH = re.compile(r"_desc(?:_(?P<desc>[a-z]{2,3}(?:_[A-Z]{2})?))?\.ogg$|_(?P<name>[a-z]{2}(?:_[A-Z]{2})?)\.ogg$")
SOURCE_COLUMNS = ["package", "file", "speaker", "language", "seconds", "sha1", "status", "reason"]


def speech_recording(package: str, path: Path) -> tuple[str, str] | None:
    """(speaker group, language) of one file of `package` (path relative to the unpacked package),
    or None when the file is not a speech recording. ValueError for a package without a rule."""
    parts, stem = path.parts, path.stem
    if package == "klettres-data":  # usr/share/klettres/<language>/{alpha,syllab}/X.ogg: one speaker per language
        lang = parts[parts.index("klettres") + 1]
        return f"klettres/{lang}", lang
    if package == "kajongg":  # usr/share/kajongg/voices/[de/]<voice>/X.ogg: a voice is one speaker in any language
        return f"kajongg/{path.parent.name}", "de" if "de" in parts[parts.index("voices") + 1:-2] else "en"
    if package.startswith("fillets-ng-data-"):  # sound/<level>/[...]/<lang>/<lvl>-<character>-<line>.ogg
        lang = package.rsplit("-", 1)[1]
        if path.parent.name != lang:
            return None
        tokens, level = stem.split("-"), parts[parts.index("sound") + 1]
        character = tokens[1] if len(tokens) >= 3 and tokens[1].isalpha() else ""
        return f"fillets-{lang}/{character or level}", lang
    if package == "ktuberling-data":  # sounds/<lang>[@script]/X.ogg: one speaker per language, scripts alike
        lang = parts[parts.index("sounds") + 1].split("@")[0]
        return f"ktuberling/{lang}", lang
    if package == "hedgewars-data":  # Sounds/voices/<voice pack>/X.ogg: one speaker per pack
        pack = parts[parts.index("voices") + 1]
        return None if pack in HEDGEWARS_SKIPPED else (f"hedgewars/{pack}", HEDGEWARS_LANGUAGES.get(pack, ""))
    if package == "tuxpaint-stamps-default":  # <stamp>_desc[_<lang>].ogg, <stamp>_<lang>.ogg: one per language
        m = TUXPAINT_SPEECH.search(path.name)
        if not m:
            return None  # <stamp>.ogg: the stamp's sound effect
        lang = m["desc"] or m["name"] or "en"
        return f"tuxpaint/{lang}", lang
    if package == "gcin-voice":  # ogg/<syllable>/<reader>.ogg: 3 and 5 are two readers of Mandarin syllables
        return f"gcin/{stem}", "zh"
    raise ValueError(f"no speaker rule for package {package!r}")


def speaker_of(package: str, path: Path) -> str:
    """The speaker group of one speech recording (see `speech_recording`); ValueError for a non-speech file."""
    found = speech_recording(package, Path(path))
    if found is None:
        raise ValueError(f"{package}: {path} is not a speech recording")
    return found[0]


def file_sha1(path) -> str:
    """sha1 of a file's bytes."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def duration_seconds(path) -> float:
    """Length of an audio file from its header; NaN when soundfile cannot read it (screening says why)."""
    try:
        info = sf.info(str(path))
        return info.frames / info.samplerate
    except (RuntimeError, sf.LibsndfileError, ValueError):
        return float("nan")


def merged_groups(pairs) -> dict[str, str]:
    """{group: merged group} joining groups connected by (group, group) pairs; a merged group takes the
    alphabetically first name."""
    parent: dict[str, str] = {}

    def find(g):
        while parent.setdefault(g, g) != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {g: find(g) for g in list(parent)}


def candidate_sources(roots: dict[str, Path], speaker_seconds: float) -> list[dict]:
    """One row per audio file of the speech packages in `roots` (SOURCE_COLUMNS plus `path`), status
    "candidate" (to screen), "not speech", "duplicate" or "over budget"."""
    rows, first, links = [], {}, []
    for pkg, where in SPEECH_PACKAGES.items():
        if pkg not in roots:
            continue
        folder = Path(roots[pkg]) / where
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if not found:
            raise CorpusError(f"{pkg}: no recordings under {where}")
        for p in found:
            rel = p.relative_to(roots[pkg])
            rec = speech_recording(pkg, rel)
            row = {"package": pkg, "file": rel.as_posix(), "path": str(p), "speaker": rec[0] if rec else "",
                   "language": rec[1] if rec else "", "seconds": duration_seconds(p), "sha1": file_sha1(p),
                   "status": "candidate" if rec else "not speech", "reason": ""}
            if rec and row["sha1"] in first:
                kept = first[row["sha1"]]
                row.update(status="duplicate", reason=f"same bytes as {kept['package']}/{kept['file']}")
                links.append((kept["speaker"], row["speaker"]))
            elif rec:
                first[row["sha1"]] = row
            rows.append(row)
    group = merged_groups(links + [(r["speaker"], r["speaker"]) for r in rows if r["speaker"]])
    for r in rows:
        r["speaker"] = group.get(r["speaker"], r["speaker"])
    used: dict[str, float] = {}
    order = sorted((r for r in rows if r["status"] == "candidate"),
                   key=lambda r: hashlib.sha1(f"{r['package']}/{r['file']}".encode()).hexdigest())
    for r in order:
        if used.get(r["speaker"], 0.0) >= speaker_seconds:
            r.update(status="over budget", reason=f"speaker group already has {speaker_seconds:g} s of candidates")
        else:
            used[r["speaker"]] = used.get(r["speaker"], 0.0) + (r["seconds"] if r["seconds"] == r["seconds"] else 0.0)
    return rows


def noise_recordings(roots: dict[str, Path]) -> dict[str, str]:
    """{file: annotator class} of the chosen sonic-pi-samples noises."""
    folder = Path(roots[NOISE_PACKAGE]) / "usr/share/sonic-pi/samples"
    out = {str(folder / f"{name}.flac"): cls for name, cls in NOISE_SAMPLES.items()}
    missing = [f for f in out if not Path(f).is_file()]
    if missing:
        raise CorpusError(f"{NOISE_PACKAGE}: missing {missing}")
    return out
