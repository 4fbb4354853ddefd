"""Tests for the real-speech corpus (builders.corpus, sources, screening, packages) on tiny fake packages:
speaker rules, screening verdicts, reserved packages, the transfer set, speaker-disjoint splits and
sources.csv. Nothing here downloads: each fake package carries the stamp a finished fetch leaves."""
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mark2_lib.builders import corpus, mixtures, packages, screening, sources
from mark2_lib.config import REAL_CLIP_SHARES, REAL_N_CLIPS, REAL_TRANSFER_FACTOR
from mark2_lib.data import load_labels
from mark2_lib.errors import CorpusError

SR = 16000


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def speech(seed=0, seconds=1.2, peak=0.5):
    """Speech-like audio: voiced syllables (harmonics of a gliding f0 under a Hann envelope) between pauses."""
    rng = np.random.default_rng(seed)
    x = np.zeros(int(seconds * SR))
    pos = int(0.1 * SR)
    while pos + int(0.3 * SR) < len(x) - int(0.1 * SR):
        n = int(rng.uniform(0.15, 0.3) * SR)
        t = np.arange(n) / SR
        f0 = rng.uniform(110, 220) * (1 + 0.1 * t)
        phase = 2 * np.pi * np.cumsum(f0) / SR
        x[pos:pos + n] = np.hanning(n) * sum(np.sin(k * phase) / k for k in range(1, 8))
        pos += n + int(rng.uniform(0.05, 0.12) * SR)
    return peak * x / np.abs(x).max()


def write(path, x, sr=SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, format="OGG" if path.suffix == ".ogg" else "WAV",
             subtype="VORBIS" if path.suffix == ".ogg" else "PCM_16")
    return path


BAD = {  # file stem -> (waveform, expected reason)
    "clipped": (np.clip(3 * speech(7), -1, 1), "clipped"),
    "silent": (np.zeros(SR), "digital silence"),
    "quiet": (speech(8, peak=0.002), "too quiet"),
    "short": (speech(9)[int(0.1 * SR):int(0.25 * SR)], "too short"),
    "noisy": (speech(10) + 0.05 * np.random.default_rng(1).standard_normal(int(1.2 * SR)), "noisy (blind SNR"),
}


def fake_package(root: Path, pkg: str, files: dict) -> None:
    """An unpacked package as fetch_packages leaves it: files, copyright and the stamp."""
    for rel, x in files.items():
        write(root / pkg / rel, x)
    doc = root / pkg / "usr/share/doc" / pkg
    doc.mkdir(parents=True, exist_ok=True)
    (doc / "copyright").write_text("Files: *\nCopyright: 2020 Someone\nLicense: GPL-2+\n")
    (root / pkg / packages.STAMP).write_text(f"{pkg} 1.0-1\n")


@pytest.fixture(scope="module")
def fake_corpus(tmp_path_factory):
    """data/real/packages with fake klettres, kajongg, ktuberling, tuxpaint, hedgewars, gcin and noise."""
    out = tmp_path_factory.mktemp("real")
    pk, k = out / "packages", iter(range(1000))
    fake_package(pk, "klettres-data", {f"usr/share/klettres/{lang}/alpha/{c}.wav": speech(next(k))
                                       for lang in ("fr", "it", "cs", "da") for c in "abc"})
    fake_package(pk, "kajongg", {**{f"usr/share/kajongg/voices/{v}/{c}.wav": speech(next(k))
                                    for v in ("male1", "female1") for c in ("pung", "kong")},
                                 "usr/share/kajongg/voices/de/male1/pung.wav": speech(next(k))})
    same = speech(next(k))
    fake_package(pk, "ktuberling-data", {"usr/share/ktuberling/sounds/sr/eye.wav": same,
                                         "usr/share/ktuberling/sounds/sr@latin/eye.wav": same,
                                         "usr/share/ktuberling/sounds/sr/nose.wav": speech(next(k)),
                                         "usr/share/ktuberling/sounds/en/nose.wav": speech(next(k))})
    stamps = "usr/share/tuxpaint/stamps/animals"
    fake_package(pk, "tuxpaint-stamps-default", {f"{stamps}/cat_desc.ogg": speech(next(k)),
                                                 f"{stamps}/cat_desc_fr.ogg": speech(next(k)),
                                                 f"{stamps}/dog_desc_fr.ogg": speech(next(k)),
                                                 f"{stamps}/dog_en_GB.ogg": speech(next(k)),
                                                 f"{stamps}/cat.ogg": 0.3 * np.sin(np.arange(SR) / 3)})
    voices = "usr/share/games/hedgewars/Data/Sounds/voices"
    fake_package(pk, "hedgewars-data", {**{f"{voices}/Default/{s}.wav": x for s, (x, _) in BAD.items()},
                                        f"{voices}/Default/Hello.wav": speech(next(k)),
                                        f"{voices}/Robot/Hello.wav": speech(next(k))})
    fake_package(pk, "gcin-voice", {f"usr/share/gcin-voice/ogg/{s}/{r}.wav": speech(next(k))
                                    for s in ("ba", "ma") for r in (3, 5)})
    t = np.arange(3 * SR) / SR
    fake_package(pk, "sonic-pi-samples", {f"usr/share/sonic-pi/samples/{name}.flac": 0.3 * np.sin(2 * np.pi * 997 * t)
                                          for name in sources.NOISE_SAMPLES})
    with pytest.warns(UserWarning, match=r"DNSMOS was turned off \(--no-dnsmos\)"):
        clips = corpus.build_real_corpus(out, n_clips=20, clip_seconds=0.5, use_dnsmos=False, progress=False,
                                         packages=tuple(p.name for p in sorted(pk.iterdir())))
    return clips


def test_speaker_rules_of_every_package():
    rule = sources.speech_recording
    assert rule("klettres-data", Path("usr/share/klettres/pt_BR/syllab/fi.ogg")) == ("klettres/pt_BR", "pt_BR")
    assert rule("kajongg", Path("usr/share/kajongg/voices/de/male1/b1.ogg")) == ("kajongg/male1", "de")
    assert rule("kajongg", Path("usr/share/kajongg/voices/male1/b1.ogg")) == ("kajongg/male1", "en")
    sound = Path("usr/share/games/fillets-ng/sound")
    assert rule("fillets-ng-data-cs", sound / "barrel/cs/bar-m-barel.ogg") == ("fillets-cs/m", "cs")
    assert rule("fillets-ng-data-nl", sound / "hole/nl/l-dejte1.ogg") == ("fillets-nl/hole", "nl")
    assert rule("fillets-ng-data-nl", sound / "share/borejokes/nl/x-4-a.ogg") == ("fillets-nl/share", "nl")
    assert rule("fillets-ng-data-nl", sound / "barrel/en/bar-m-barel.ogg") is None  # another language's file
    assert rule("ktuberling-data", Path("usr/share/ktuberling/sounds/sr@ijekavian/eye.ogg")) == ("ktuberling/sr", "sr")
    voices = Path("usr/share/games/hedgewars/Data/Sounds/voices")
    assert rule("hedgewars-data", voices / "Default_pl/Hello.ogg") == ("hedgewars/Default_pl", "pl")
    assert rule("hedgewars-data", voices / "Mobster/Hello.ogg") == ("hedgewars/Mobster", "")
    assert rule("hedgewars-data", voices / "Robot/Hello.ogg") is None and rule("hedgewars-data", voices /
                                                                              "Singer/Hello.ogg") is None
    stamps = Path("usr/share/tuxpaint/stamps/animals")
    assert rule("tuxpaint-stamps-default", stamps / "cat_desc.ogg") == ("tuxpaint/en", "en")
    assert rule("tuxpaint-stamps-default", stamps / "cat_desc_ro.ogg") == ("tuxpaint/ro", "ro")
    assert rule("tuxpaint-stamps-default", stamps / "seven_en_GB.ogg") == ("tuxpaint/en_GB", "en_GB")
    assert rule("tuxpaint-stamps-default", stamps / "cat.ogg") is None  # the stamp's sound effect
    assert rule("gcin-voice", Path("usr/share/gcin-voice/ogg/ba3/5.ogg")) == ("gcin/5", "zh")
    assert sources.speaker_of("kajongg", Path("usr/share/kajongg/voices/female2/x.ogg")) == "kajongg/female2"
    with pytest.raises(ValueError, match="no speaker rule"):
        rule("other", Path("a.ogg"))
    with pytest.raises(ValueError, match="not a speech recording"):
        sources.speaker_of("tuxpaint-stamps-default", stamps / "cat.ogg")
    assert sources.merged_groups([("b", "c"), ("d", "c"), ("e", "e")]) == {"b": "b", "c": "b", "d": "b", "e": "e"}


def test_screening_verdicts(tmp_path):
    clean = write(tmp_path / "clean.wav", speech(3))
    m, problem = screening.measure_file(clean)
    assert problem == "" and m["stnr_db"] >= screening.STNR_MIN_DB and -30 < m["level_dbfs"] < -3
    for stem, (x, reason) in BAD.items():
        _, problem = screening.measure_file(write(tmp_path / f"{stem}.wav", x))
        if stem == "noisy":  # no signal problem: the blind SNR (or DNSMOS) finds it
            assert problem == "", problem
        else:
            assert problem.startswith(reason), (stem, problem)
    (tmp_path / "text.wav").write_text("not audio")
    assert screening.measure_file(tmp_path / "text.wav")[1].startswith("unreadable")
    rows = [{"path": str(tmp_path / f"{s}.wav"), "status": "candidate", "seconds": math.nan}
            for s in ("clean", *BAD)]
    with pytest.warns(UserWarning, match=r"DNSMOS was turned off \(--no-dnsmos\)"):
        how = screening.screen_sources(rows, tmp_path / "cache", use_dnsmos=False, progress=False)
    assert "blind SNR only" in how
    got = {Path(r["path"]).stem: (r["status"], r["reason"]) for r in rows}
    assert got["clean"] == ("clean", "")
    for stem, (_, reason) in BAD.items():
        assert got[stem][0] == "rejected" and got[stem][1].startswith(reason), (stem, got[stem])


def test_dnsmos_thresholds_decide_with_the_extra(tmp_path, monkeypatch):
    paths = {s: str(write(tmp_path / f"{s}.wav", speech(i))) for i, s in enumerate(("ok", "bak", "sig", "err"))}
    fake = {paths["ok"]: (3.6, 4.1, 3.3), paths["bak"]: (3.5, screening.BAK_MIN - 0.01, 3.0),
            paths["sig"]: (screening.SIG_MIN - 0.01, 4.0, 2.9), paths["err"]: "cannot decode"}
    monkeypatch.setattr(screening, "dnsmos_scores", lambda p, *a: {k: fake[k] for k in p})
    rows = [{"path": p, "status": "candidate", "seconds": math.nan} for p in paths.values()]
    how = screening.screen_sources(rows, tmp_path / "cache", use_dnsmos=True, progress=False)
    assert "DNSMOS" in how and "not installed" not in how
    got = {Path(r["path"]).stem: r for r in rows}
    assert got["ok"]["status"] == "clean" and got["ok"]["bak"] == 4.1 and got["ok"]["sig"] == 3.6
    assert got["bak"]["reason"].startswith("noisy background (DNSMOS BAK")
    assert got["sig"]["reason"].startswith("distorted speech (DNSMOS SIG")
    assert got["err"]["reason"] == "DNSMOS could not score it: cannot decode"
    assert all(got[s]["status"] == "rejected" for s in ("bak", "sig", "err"))


@pytest.mark.parametrize("name", ["pocketsphinx-testdata", "codec2-examples", "asterisk-core-sounds-en-wav",
                                  "asterisk-prompt-fr-armelle", "btanks-data", "etw-data"])
def test_reserved_packages_are_refused(tmp_path, monkeypatch, name):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing could be downloaded anyway
    with pytest.raises(CorpusError, match=f"reserved.*{name}"):
        packages.fetch_packages(tmp_path / "pkgs", ["kajongg", name], progress=False)
    with pytest.raises(CorpusError, match=f"reserved.*{name}"):
        corpus.build_real_corpus(tmp_path / "real", packages=corpus.PACKAGES + (name,), progress=False)
    assert not (tmp_path / "pkgs").exists() and not (tmp_path / "real").exists()
    packages.check_not_reserved(corpus.PACKAGES)  # the corpus's own packages are not reserved


def test_default_sizes_stay_labelable_with_a_large_test_split():
    split = corpus.deal_splits(REAL_N_CLIPS, REAL_CLIP_SHARES, at_least=0)
    n_transfer = corpus.transfer_size(REAL_N_CLIPS, REAL_TRANSFER_FACTOR)
    assert split.count("test") >= 150 and n_transfer >= 5 * split.count("train")
    assert REAL_N_CLIPS + n_transfer <= 2500


def test_transfer_set_and_speaker_disjoint_splits(fake_corpus):
    truth = read_rows(fake_corpus / "truth.csv")
    labels = {r["clip_id"]: r for r in read_rows(fake_corpus / "labels.csv")}
    labelled = [r for r in truth if labels[r["clip_id"]]["label"]]
    transfer = [r for r in truth if not labels[r["clip_id"]]["label"]]
    n_train = sum(r["split"] == "train" for r in labelled)
    assert len(labelled) == 20 and n_train == 10 and len(transfer) == corpus.transfer_size(20, 5.0) == 50
    assert {r["split"] for r in transfer} == {"train"} and all(r["clip_id"].startswith("m0_t") for r in transfer)
    clean = [r for r in read_rows(fake_corpus / "sources.csv") if r["status"] == "clean"]
    split_of = mixtures.split_groups([r["speaker"] for r in clean], 0)  # every clean speaker group's split
    assert set(split_of.values()) == {"train", "val", "test"}
    for r in labelled:
        assert split_of[r["speaker"]] == r["split"], r
    for r in transfer:
        assert split_of[r["speaker"]] == "train", r
        if r["noise_type"] == "babble":
            assert {split_of[t] for t in r["noise_source"].split("+")} == {"train"}, r
    assert any(r["snr_db"] for r in transfer) and all(r["p_noise_annotator"] for r in transfer)
    manifest = load_labels(fake_corpus / "labels.csv")
    assert int((~manifest.labelled).sum()) == 50 and set(manifest.df[~manifest.labelled]["split"]) == {"train"}


def test_sources_record(fake_corpus):
    rows = {(r["package"], r["file"].split("/", 3)[-1]): r for r in read_rows(fake_corpus / "sources.csv")}
    assert set(read_rows(fake_corpus / "sources.csv")[0]) >= {"package", "file", "speaker", "language", "seconds",
                                                               "level_dbfs", "bak", "sig", "status", "reason"}
    for stem, (_, reason) in BAD.items():
        r = rows[("hedgewars-data", f"hedgewars/Data/Sounds/voices/Default/{stem}.wav")]
        assert r["status"] == "rejected" and r["reason"].startswith(reason), r
    hello = rows[("hedgewars-data", "hedgewars/Data/Sounds/voices/Default/Hello.wav")]
    assert hello["status"] == "clean" and hello["language"] == "en" and "blind SNR only" in hello["screening"]
    assert rows[("tuxpaint-stamps-default", "stamps/animals/cat.ogg")]["status"] == "not speech"
    assert rows[("tuxpaint-stamps-default", "stamps/animals/dog_en_GB.ogg")]["speaker"] == "tuxpaint/en_GB"
    dups = [r for r in rows.values() if r["status"] == "duplicate"]
    assert len(dups) == 1 and dups[0]["reason"] == "same bytes as ktuberling-data/usr/share/ktuberling/sounds/sr/eye.wav"
    kept = rows[("klettres-data", "fr/alpha/a.wav")]
    assert kept["status"] == "clean" and float(kept["seconds"]) == pytest.approx(1.2) and kept["bak"] == ""
    used = {f for r in read_rows(fake_corpus / "truth.csv") for f in r["clean_files"].split("+")}
    clean_names = {Path(r["file"]).name for r in rows.values() if r["status"] == "clean"}
    assert {Path(f).name for f in used} <= clean_names and not {Path(f).stem for f in used} & set(BAD)
    text = (fake_corpus / "SOURCES.md").read_text()
    assert "| gcin-voice | 1.0-1 | GPL-2+ |" in text and "## Screening of the dry sources" in text
    all_row = next(line for line in text.splitlines() if line.startswith("| all |")).split(" | ")
    assert all_row[4] == "-" and all_row[-1] == "- |", all_row  # no DNSMOS: mean BAK unknown, not 0.00
    assert (fake_corpus / "licenses" / "tuxpaint-stamps-default.copyright").is_file()
