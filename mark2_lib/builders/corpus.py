"""A real-speech corpus from Debian packages: fetch them, find the recordings, record licences, mix the clips.

`make data-real` runs `build_real_corpus`: `apt-get download` + `dpkg-deb -x` put four packages
under `data/real/packages/` (no root, no install; only apt's package lists are needed), and
`mixtures.make_mixture_dataset` mixes their speech with their noise into `data/real/clips/`.
Speakers are grouped as documented in data/README.md, so train, val and test never share a voice.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from ..errors import CorpusError
from .mixtures import make_mixture_dataset

CLEAN_PACKAGES = ("klettres-data", "fillets-ng-data-cs", "kajongg")
NOISE_PACKAGE = "sonic-pi-samples"
PACKAGES = CLEAN_PACKAGES + (NOISE_PACKAGE,)
# sonic-pi-samples: hiss, hums, ambience and machine loops (no music), each with the annotator class it sounds like
NOISE_SAMPLES = {
    "vinyl_hiss": "white", "ambi_glass_hum": "hum", "ambi_haunted_hum": "hum", "ambi_soft_buzz": "hum",
    "ambi_drone": "fan", "ambi_lunar_land": "fan", "ambi_dark_woosh": "fan", "ambi_sauna": "fan",
    "loop_3d_printer": "fan", "loop_industrial": "clicks", "loop_electric": "clicks",
}
AUDIO_SUFFIXES = (".ogg", ".flac", ".wav")
_STAMP = ".extracted"


def _run(cmd: list[str], cwd: Path) -> str:
    """Run a command; a failure raises CorpusError with its output."""
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise CorpusError(f"`{cmd[0]}` not found: building the real corpus needs Debian/Ubuntu's apt-get "
                          "and dpkg-deb") from None
    if done.returncode != 0:
        raise CorpusError(f"`{' '.join(cmd)}` failed ({done.returncode}): {(done.stderr or done.stdout).strip()}\n"
                          "if apt cannot find the package, refresh its lists with `apt-get update`")
    return done.stdout


def fetch_packages(dest, packages=PACKAGES, progress: bool = True) -> dict[str, Path]:
    """`apt-get download` each package into `dest` and unpack it with `dpkg-deb -x`; reuses finished ones.

    Returns {package: folder it was unpacked into}.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for pkg in packages:
        root = dest / pkg
        if not (root / _STAMP).exists():
            for old in dest.glob(f"{pkg}_*.deb"):
                old.unlink()
            if progress:
                print(f"apt-get download {pkg}", flush=True)
            _run(["apt-get", "download", pkg], dest)
            debs = sorted(dest.glob(f"{pkg}_*.deb"))
            if not debs:
                raise CorpusError(f"apt-get download {pkg} left no {pkg}_*.deb in {dest}")
            shutil.rmtree(root, ignore_errors=True)
            _run(["dpkg-deb", "-x", str(debs[-1]), str(root)], dest)
            version = _run(["dpkg-deb", "-f", str(debs[-1]), "Version"], dest).strip()
            (root / _STAMP).write_text(f"{pkg} {version}\n")
        out[pkg] = root
    return out


def package_version(root) -> str:
    """The Debian version of an unpacked package."""
    return (Path(root) / _STAMP).read_text().split()[1]


def _audio(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def speaker_of(package: str, path: Path) -> str:
    """The speaker group of one recording (see data/README.md for the rules)."""
    parts = path.parts
    if package == "klettres-data":  # usr/share/klettres/<language>/{alpha,syllab}/X.ogg: one speaker per language
        return f"klettres/{parts[parts.index('klettres') + 1]}"
    if package == "kajongg":  # usr/share/kajongg/voices/[de/]<voice>/X.ogg: a voice is one speaker in any language
        return f"kajongg/{path.parent.name}"
    if package == "fillets-ng-data-cs":  # sound/<level>/cs/<lvl>-<character>-<line>.ogg
        tokens = path.stem.split("-")
        level = parts[parts.index("sound") + 1]
        character = tokens[1] if len(tokens) >= 3 and tokens[1].isalpha() else ""
        return f"fillets/{character}" if character else f"fillets/{level}"
    raise ValueError(f"no speaker rule for package {package!r}")


def clean_recordings(roots: dict[str, Path]) -> tuple[list[str], list[str]]:
    """(files, speakers) of the speech recordings of CLEAN_PACKAGES."""
    where = {"klettres-data": "usr/share/klettres", "kajongg": "usr/share/kajongg/voices",
             "fillets-ng-data-cs": "usr/share/games/fillets-ng/sound"}
    files, speakers = [], []
    for pkg in CLEAN_PACKAGES:
        found = _audio(Path(roots[pkg]) / where[pkg])
        if not found:
            raise CorpusError(f"{pkg}: no recordings under {where[pkg]}")
        files += [str(p) for p in found]
        speakers += [speaker_of(pkg, p.relative_to(roots[pkg])) for p in found]
    return files, speakers


def noise_recordings(roots: dict[str, Path]) -> dict[str, str]:
    """{file: annotator class} of the chosen sonic-pi-samples noises."""
    folder = Path(roots[NOISE_PACKAGE]) / "usr/share/sonic-pi/samples"
    out = {str(folder / f"{name}.flac"): cls for name, cls in NOISE_SAMPLES.items()}
    missing = [f for f in out if not Path(f).is_file()]
    if missing:
        raise CorpusError(f"{NOISE_PACKAGE}: missing {missing}")
    return out


def copyright_licences(copyright_file, files=None) -> list[str]:
    """The licences a Debian copyright file names: every `License:` (or GPL notice), or those of `files`."""
    text = Path(copyright_file).read_text(errors="replace")
    stanzas = [s for s in re.split(r"\n\s*\n", text) if s.strip()]
    if files is not None and any(s.startswith("Files:") for s in stanzas):  # machine-readable (DEP-5)
        out = []
        for f in files:
            hits = [s for s in stanzas if re.search(rf"^Files:.*\b{re.escape(f)}\b", s, re.M)]
            default = [s for s in stanzas if re.match(r"Files:\s*\*\s*$", s.splitlines()[0])]
            s = (hits or default or [""])[0]
            lic = re.search(r"^License:\s*(\S.*)$", s, re.M)
            who = re.search(r"^Copyright:\s*(\S.*)$", s, re.M)
            out.append(f"{f}: {lic.group(1) if lic else 'unknown'}" + (f" ({who.group(1)})" if who else ""))
        return out
    found = sorted(set(re.findall(r"^License:\s*(\S+)", text, re.M)))
    if "GNU General Public License" in text and not found:
        version = re.search(r"GNU General Public License[^.]*?version (\d)", text.replace("\n", " "))
        found = [f"GPL-{version.group(1) if version else '?'}"]
    return found


def write_sources(out_dir, roots: dict[str, Path]) -> Path:
    """SOURCES.md beside the clips: package, version, licences, and each package's copyright file copied."""
    out_dir = Path(out_dir)
    (out_dir / "licenses").mkdir(parents=True, exist_ok=True)
    lines = ["# Sources of the real corpus", "",
             "| package | version | licences | copyright file |", "|---|---|---|---|"]
    for pkg, root in roots.items():
        cp = Path(root) / "usr/share/doc" / pkg / "copyright"
        shutil.copyfile(cp, out_dir / "licenses" / f"{pkg}.copyright")
        names = [Path(f).name for f in noise_recordings(roots)] if pkg == NOISE_PACKAGE else None
        lic = copyright_licences(cp, names)
        cell = "<br>".join(lic) if names else ", ".join(lic)
        lines.append(f"| {pkg} | {package_version(root)} | {cell} | licenses/{pkg}.copyright |")
    path = out_dir / "SOURCES.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def build_real_corpus(out_dir="data/real", n_clips: int = 480, seed: int = 0, clip_seconds: float = 2.0,
                      progress: bool = True) -> Path:
    """Fetch the packages into `out_dir/packages/` and mix `n_clips` labelled clips into `out_dir/clips/`."""
    out_dir = Path(out_dir)
    roots = fetch_packages(out_dir / "packages", progress=progress)
    files, speakers = clean_recordings(roots)
    clips = make_mixture_dataset(files, noise_recordings(roots), out_dir / "clips", seed=seed, n_clips=n_clips,
                                 clip_seconds=clip_seconds, speakers=speakers, progress=progress)
    write_sources(clips, roots)
    return clips
