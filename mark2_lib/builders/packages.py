"""Debian packages for the real-speech corpus: fetch and unpack them (no root), refuse reserved ones,
and record their versions and licences beside the clips (SOURCES.md, licenses/).

`apt-get download` + `dpkg-deb -x` put each package under `<dest>/<package>/`; a stamp file marks a
finished one, so a rebuild downloads nothing. Only apt's package lists are needed, not an install.
"""
from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path

from ..errors import CorpusError

# Kept out of every corpus, test and benchmark: building with any of them (or a name one of these
# patterns matches) raises CorpusError naming it.
RESERVED_PACKAGES = ("pocketsphinx-testdata", "codec2-examples", "asterisk-core-sounds-*", "asterisk-prompt-*",
                     "btanks-data", "etw-data")
STAMP = ".extracted"


def check_not_reserved(packages) -> None:
    """CorpusError naming each package of `packages` that RESERVED_PACKAGES names or matches."""
    hits = [f"{p} (reserved: {pat})" for p in packages for pat in RESERVED_PACKAGES
            if fnmatch.fnmatchcase(str(p).lower(), pat)]
    if hits:
        raise CorpusError(f"reserved package(s) may not be used in any corpus: {', '.join(hits)}")


def run_tool(cmd: list[str], cwd: Path) -> str:
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


def fetch_packages(dest, packages, progress: bool = True) -> dict[str, Path]:
    """`apt-get download` each package into `dest` and unpack it with `dpkg-deb -x`; reuses finished ones.

    Returns {package: folder it was unpacked into}. Reserved packages are refused before anything runs.
    """
    packages = list(packages)
    check_not_reserved(packages)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for pkg in packages:
        root = dest / pkg
        if not (root / STAMP).exists():
            for old in dest.glob(f"{pkg}_*.deb"):
                old.unlink()
            if progress:
                print(f"apt-get download {pkg}", flush=True)
            run_tool(["apt-get", "download", pkg], dest)
            debs = sorted(dest.glob(f"{pkg}_*.deb"))
            if not debs:
                raise CorpusError(f"apt-get download {pkg} left no {pkg}_*.deb in {dest}")
            shutil.rmtree(root, ignore_errors=True)
            run_tool(["dpkg-deb", "-x", str(debs[-1]), str(root)], dest)
            version = run_tool(["dpkg-deb", "-f", str(debs[-1]), "Version"], dest).strip()
            (root / STAMP).write_text(f"{pkg} {version}\n")
        out[pkg] = root
    return out


def package_version(root) -> str:
    """The Debian version of an unpacked package."""
    return (Path(root) / STAMP).read_text().split()[1]


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


def write_licences(out_dir, roots: dict[str, Path], per_file: dict[str, list[str]] | None = None,
                   extra: str = "") -> Path:
    """SOURCES.md beside the clips: package, version, licences (per file for the packages in `per_file`),
    each package's copyright file copied to licenses/, then `extra` (markdown)."""
    out_dir, per_file = Path(out_dir), per_file or {}
    (out_dir / "licenses").mkdir(parents=True, exist_ok=True)
    lines = ["# Sources of the real corpus", "",
             "| package | version | licences | copyright file |", "|---|---|---|---|"]
    for pkg, root in roots.items():
        cp = Path(root) / "usr/share/doc" / pkg / "copyright"
        if not cp.is_file():
            raise CorpusError(f"{pkg}: no copyright file at {cp}")
        shutil.copyfile(cp, out_dir / "licenses" / f"{pkg}.copyright")
        names = per_file.get(pkg)
        lic = copyright_licences(cp, names)
        cell = "<br>".join(lic) if names else ", ".join(lic)
        lines.append(f"| {pkg} | {package_version(root)} | {cell} | licenses/{pkg}.copyright |")
    path = out_dir / "SOURCES.md"
    path.write_text("\n".join(lines) + "\n" + (f"\n{extra.strip()}\n" if extra.strip() else ""))
    return path
