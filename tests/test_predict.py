"""Tests for mark2_lib.inference.predict (with mark2_lib.inference.stream) and the `predict` / `export` commands: CSV layout, error rows,
folder recursion, segment times, streaming == whole-file scoring, resampling, TorchScript export."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torch.nn as nn
from numpy.lib.stride_tricks import sliding_window_view

from mark2_lib import audio
from mark2_lib.builders.synth import make_default_dataset
from mark2_lib.cli import main
from mark2_lib.config import AudioConfig, audio_config, model_config
from mark2_lib.inference import predict, stream
from mark2_lib.models import ClipClassifier, WaveformClassifier
from mark2_lib.run_folders import load_classifier

CFG = audio_config("student")  # clip framing
LEGACY = AudioConfig()         # segment framing, as runs saved before framing existed
SR = CFG.sample_rate


# ----------------------------------------------------------------------------- fixtures

def make_run(run_dir, pooling="mean", seed=0, audio_cfg=CFG):
    """A run folder laid out like the trainer's (config.json + encoder.pt + head.pt).

    Untrained weights, but BatchNorm statistics measured on noise and tones and a sharpened last
    layer, so that scores really vary with the input (a fresh model scores everything the same).
    A segment-framing `audio_cfg` is saved without the `framing` key (`AudioConfig.to_dict`), as old runs were.
    """
    torch.manual_seed(seed)
    cfg = model_config("student", pooling=pooling)
    model = ClipClassifier(audio_cfg, cfg)
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(CFG.segment_samples) / SR
    waves = torch.cat([torch.randn(32, CFG.segment_samples, generator=g) * torch.rand(32, 1, generator=g),
                       torch.sin(2 * torch.pi * 4000 * torch.rand(32, 1, generator=g) * t)])
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.momentum = None  # a cumulative average over the calibration batch
        m.reset_running_stats()
    with torch.no_grad():
        model.train().segment_forward(audio.LogMel(audio_cfg)(waves)[:, 0])  # 1 s waves: one segment each
        model.head.net[-1].weight.mul_(10.0)
        if model.head.attention is not None:
            model.head.attention.weight.mul_(10.0)
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"train": {}, "audio": audio_cfg.to_dict(), "model": cfg.to_dict()}))
    torch.save(model.encoder.state_dict(), run_dir / "encoder.pt")
    torch.save(model.head.state_dict(), run_dir / "head.pt")
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {p: make_run(root / p, pooling=p, seed=i) for i, p in enumerate(("mean", "max", "attention"))}
    out["legacy"] = make_run(root / "legacy", seed=3, audio_cfg=LEGACY)
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Eight 2 s synthetic clips (16 kHz mono PCM_16)."""
    out = make_default_dataset(tmp_path_factory.mktemp("data"), n_clips=8, progress=False)
    return sorted((out / "audio").glob("*.wav"))


def whole_file(run_or_model, path):
    """(p_noise clip, p_noise per segment) the simple way: load everything, one forward pass."""
    model = load_classifier(run_or_model) if not isinstance(run_or_model, nn.Module) else run_or_model
    with torch.no_grad():
        clip, seg = model.segment_and_clip_logits(audio.load_audio(path, SR)[None])
    return torch.softmax(clip, -1)[0, 1].item(), torch.softmax(seg, -1)[0, :, 1].numpy()


def write(path, x, sr=SR, subtype="PCM_16"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, subtype=subtype)
    return path


def noise(seconds, sr=SR, channels=1, seed=0):
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, (int(round(seconds * sr)), channels)).astype(np.float32)
    return x[:, 0] if channels == 1 else x


def read_csv(path):
    return pd.read_csv(path, keep_default_na=False, dtype={"error": str, "label": str})


# ----------------------------------------------------------------------------- the predict command

def test_cli_scores_good_files_and_reports_bad_ones(runs, clips, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.wav").write_bytes(b"")
    (bad / "text.wav").write_text("this is not audio\n" * 20)
    x = noise(2.0)
    x[20000] = np.nan
    write(bad / "nan.wav", x, subtype="FLOAT")
    raw = write(tmp_path / "full.wav", noise(2.0)).read_bytes()
    (bad / "truncated.wav").write_bytes(raw[:len(raw) // 2])
    missing = tmp_path / "missing.wav"
    out = tmp_path / "preds.csv"

    rc = main(["predict", str(runs["mean"]), *map(str, clips[:3]), str(bad), str(missing),
               "--out", str(out), "--no-progress"])
    assert rc == 1
    df = read_csv(out)
    assert list(df.columns) == ["path", "p_noise", "label", "n_segments", "error"]
    assert len(df) == 3 + 4 + 1  # nothing skipped
    good = df[df["error"] == ""]
    assert list(good["path"]) == list(map(str, clips[:3]))
    for path, p, label, n in good[["path", "p_noise", "label", "n_segments"]].itertuples(index=False):
        expected, seg = whole_file(runs["mean"], path)
        assert abs(float(p) - expected) < 1e-5
        assert label == ("noise" if float(p) >= 0.5 else "clean")
        assert int(n) == len(seg) == 3  # 2 s clips, 1 s windows every 0.5 s
    errors = dict(zip(df["path"], df["error"]))
    assert "file is empty" in errors[str(bad / "empty.wav")]
    assert "not a readable audio file" in errors[str(bad / "text.wav")]
    assert "NaN or inf" in errors[str(bad / "nan.wav")]
    assert "truncated" in errors[str(bad / "truncated.wav")]
    assert "file not found" in errors[str(missing)]
    failed = df[df["error"] != ""]
    assert (failed["p_noise"] == "").all() and (failed["label"] == "").all() and (failed["n_segments"] == "").all()
    err = capsys.readouterr().err
    assert "8 files: 3 scored" in err and "5 failed" in err
    assert all(str(p) in err for p in failed["path"])


def test_cli_all_good_exits_0_and_bad_run_exits_2(runs, clips, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert main(["predict", str(runs["mean"]), str(clips[0]), "--out", str(out), "--no-progress"]) == 0
    assert main(["predict", str(tmp_path / "no_run"), str(clips[0]), "--out", str(out), "--no-progress"]) == 2
    assert "is missing" in capsys.readouterr().err


def test_folder_recursion_sorted_case_insensitive(runs, tmp_path):
    root = tmp_path / "tree"
    for rel in ["b/z.wav", "a/deep/er/y.WAV", "a/x.flac", "c.Wav"]:
        write(root / rel, noise(1.3, seed=len(rel)))
    (root / "notes.txt").write_text("not audio")
    (tmp_path / "empty_dir").mkdir()
    df, seg = predict.predict_paths(runs["mean"], [root], progress=False)
    assert seg is None
    assert list(df["path"]) == [str(root / p) for p in ["a/deep/er/y.WAV", "a/x.flac", "b/z.wav", "c.Wav"]]
    assert (df["error"] == "").all() and df["p_noise"].between(0, 1).all()
    assert df["p_noise"].std() > 0.01  # the test model's scores depend on the input
    assert df.attrs["n_ignored"] == 1
    assert "not audio" in predict.summary_text(df)
    df, _ = predict.predict_paths(runs["mean"], [tmp_path / "empty_dir"], progress=False)
    assert "no audio files" in df["error"][0]


def test_segments_csv_times_and_scores(runs, tmp_path):
    n = 37123  # 2.32 s: the last window is zero-padded and its end clipped
    path = write(tmp_path / "odd.wav", noise(n / SR))
    out = tmp_path / "o.csv"
    assert main(["predict", str(runs["attention"]), str(path), "--segments", "--out", str(out),
                 "--no-progress", "--batch-size", "2"]) == 0
    seg = read_csv(tmp_path / "o_segments.csv")
    assert list(seg.columns) == ["path", "segment", "start_s", "end_s", "p_noise", "label"]
    times = audio.segment_times(n, CFG)
    assert list(seg["segment"]) == list(range(len(times)))
    np.testing.assert_allclose(seg[["start_s", "end_s"]].to_numpy(float), np.array(times), atol=1e-6)
    _, expected = whole_file(runs["attention"], path)
    np.testing.assert_allclose(seg["p_noise"].to_numpy(float), expected, atol=1e-5)
    assert int(read_csv(out)["n_segments"][0]) == len(times)


@pytest.mark.parametrize("pooling", ["mean", "max", "attention", "legacy"])
def test_streamed_long_file_equals_whole_file(runs, tmp_path, pooling):
    rng = np.random.default_rng(1)
    x = (rng.uniform(-1, 1, 60 * SR) * np.repeat(rng.uniform(0.01, 0.6, 60), SR)).astype(np.float32)
    path = write(tmp_path / "long.wav", x[:-1234], subtype="FLOAT")  # not a whole number of hops
    df, seg = predict.predict_paths(runs[pooling], [path], batch_size=37, segments=True, progress=False,
                                    block_frames=7919)  # many blocks, windows straddling them
    p_clip, p_seg = whole_file(runs[pooling], path)
    assert df["error"][0] == "" and df["n_segments"][0] == len(p_seg) == 119
    assert abs(df["p_noise"][0] - p_clip) < 1e-5
    np.testing.assert_allclose(seg["p_noise"].to_numpy(), p_seg, atol=1e-5)
    assert p_seg.std() > 0.01  # segments really differ, so a misplaced window would show


def test_nan_late_in_a_streamed_file_fails_only_that_file(runs, clips, tmp_path):
    x = noise(10.0)
    x[9 * SR] = np.inf
    bad = write(tmp_path / "late_inf.wav", x, subtype="FLOAT")
    df, seg = predict.predict_paths(load_classifier(runs["max"]), [clips[0], bad, clips[1]], batch_size=2,
                                    segments=True, progress=False, block_frames=4000)
    assert list(df["error"] == "") == [True, False, True]
    assert "NaN or inf" in df["error"][1] and pd.isna(df["p_noise"][1]) and pd.isna(df["n_segments"][1])
    assert set(seg["path"]) == {str(clips[0]), str(clips[1])}  # no partial segments of the bad file
    for i in (0, 2):
        assert abs(df["p_noise"][i] - whole_file(runs["max"], df["path"][i])[0]) < 1e-5


def test_an_unfused_model_is_scored_through_a_fused_copy(runs, clips):
    """A WaveformClassifier fresh from training scores as its run does, and is left as it was."""
    loaded = load_classifier(runs["attention"])
    model = ClipClassifier(loaded.audio, loaded.model.config)
    model.encoder.load_state_dict(torch.load(runs["attention"] / "encoder.pt", weights_only=True))
    model.head.load_state_dict(torch.load(runs["attention"] / "head.pt", weights_only=True))
    wrapped = WaveformClassifier(loaded.audio, model).train()
    df, _ = predict.predict_paths(wrapped, clips[:2], progress=False)
    assert wrapped.training and not model.encoder.fused
    expected, _ = predict.predict_paths(loaded, clips[:2], progress=False)
    np.testing.assert_allclose(df["p_noise"].to_numpy(float), expected["p_noise"].to_numpy(float), atol=1e-6)


def write_long(path, seconds, sr=SR, channels=1):
    """A long PCM_16 noise file, written a chunk at a time (no whole-file array)."""
    n, rng = int(round(seconds * sr)), np.random.default_rng(int(seconds))
    with sf.SoundFile(str(path), "w", sr, channels, subtype="PCM_16") as f:
        for i in range(0, n, 1 << 18):
            f.write(rng.integers(-8000, 8000, (min(1 << 18, n - i), channels), dtype=np.int16))
    return path


def test_predict_reads_at_most_block_frames_at_a_time(runs, tmp_path, monkeypatch):
    block = 5000
    paths = [write_long(tmp_path / "mono.wav", 40.0), write_long(tmp_path / "stereo.wav", 25.0, sr=44100, channels=2)]
    reads, real_read = [], sf.SoundFile.read

    def read(self, frames=-1, *args, **kwargs):
        out = real_read(self, frames, *args, **kwargs)
        reads.append((self.name, frames, len(out)))
        return out

    model = load_classifier(runs["mean"])
    monkeypatch.setattr(sf.SoundFile, "read", read)
    df, _ = predict.predict_paths(model, paths, progress=False, block_frames=block)
    monkeypatch.undo()
    assert (df["error"] == "").all() and df["p_noise"].between(0, 1).all()
    assert df["n_segments"].tolist() == [audio.n_segments(40 * SR, CFG), audio.n_segments(25 * SR, CFG)]
    for path in paths:
        mine = [(frames, got) for name, frames, got in reads if name == str(path)]
        assert all(0 < frames <= block and got <= block for frames, got in mine), mine[:3]  # never the whole file
        assert sum(got for _, got in mine) == sf.info(str(path)).frames  # yet all of it, block by block
        assert len(mine) >= sf.info(str(path)).frames // block


def test_streaming_memory_does_not_grow_with_the_file(runs, tmp_path):
    """Peak Python/numpy memory (tracemalloc) while streaming a file 4x as long stays about the same; reading
    the file whole would take 4x as much (its decoded samples alone are 7.7 MB at 2 min)."""
    import tracemalloc

    model = load_classifier(runs["mean"])
    paths = {s: write_long(tmp_path / f"{s}s.wav", s) for s in (30.0, 120.0)}

    def peak(fn):
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            fn()
            return tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()

    def drain(path):
        for _ in stream.stream_stretches(path, CFG, block_frames=4096):
            pass

    for run in (drain, lambda p: predict.predict_paths(model, [p], progress=False, block_frames=4096)):
        short, long = peak(lambda: run(paths[30.0])), peak(lambda: run(paths[120.0]))
        assert long < 1.5 * short and long < 120 * SR * 4 / 8, (short, long)  # bounded, << the decoded file


def test_44k1_stereo_file_is_resampled_and_mixed(runs, tmp_path):
    x = noise(3.7, sr=44100, channels=2, seed=3)
    path = write(tmp_path / "stereo.wav", x, sr=44100)
    df, seg = predict.predict_paths(runs["mean"], [path], segments=True, progress=False, block_frames=10007)
    p_clip, p_seg = whole_file(runs["mean"], path)
    n = audio.load_audio(path, SR).shape[0]
    assert df["error"][0] == "" and df["n_segments"][0] == audio.n_segments(n, CFG)
    assert abs(df["p_noise"][0] - p_clip) < 1e-4
    np.testing.assert_allclose(seg["p_noise"].to_numpy(), p_seg, atol=1e-4)
    assert seg["end_s"].iloc[-1] == pytest.approx(n / SR)


@pytest.mark.parametrize("framing", ["segment", "clip"])
def test_segmenter_gives_the_whole_clips_windows_for_any_block_size(framing):
    cfg = AudioConfig(sample_rate=1000, segment_seconds=0.04, hop_seconds=0.02, n_fft=16, win_length=16,
                      hop_length=4, n_mels=4, f_min=0.0, f_max=500.0, framing=framing)
    rng, width = np.random.default_rng(0), cfg.segment_samples + 2 * cfg.context
    for n in (1, 8, 9, 39, 40, 41, 100, 333):  # shorter than the reflected context (8), one window, several
        x = rng.normal(size=n).astype(np.float32)
        ref = audio.stream_windows_of(torch.from_numpy(x), cfg).numpy()
        for block in (1, 3, 9, 50, 1000):
            seg = stream.Segmenter(cfg)
            stretches = [s for i in range(0, n, block) for s in seg.push(x[i:i + block])] + list(seg.finish())
            assert all((len(s) - width) % cfg.hop_samples == 0 for s in stretches)  # whole windows only
            got = [w for s in stretches for w in sliding_window_view(s, width)[::cfg.hop_samples]]
            assert np.array_equal(np.stack(got), ref), (n, block)


@pytest.mark.parametrize("cfg", [CFG, LEGACY], ids=["clip", "segment"])
def test_stretch_features_equal_each_windows_features(cfg):
    wave = torch.from_numpy(noise(4.3, seed=5))
    windows = audio.stream_windows_of(wave, cfg)                                  # [S, width]
    stretch = torch.cat([windows[0]] + [w[-cfg.hop_samples:] for w in windows[1:]])  # the stream they span
    logmel = audio.LogMel(cfg)
    torch.testing.assert_close(logmel.stretch(stretch), logmel.windows(windows), rtol=0, atol=1e-4)
    torch.testing.assert_close(logmel.stretch(stretch[:-cfg.hop_samples]), logmel.windows(windows[:-1]), rtol=0, atol=1e-4)


@pytest.mark.parametrize("orig", [44100, 8000, 22050])
def test_stream_resampler_equals_whole_signal_resampling(orig):
    x = np.random.default_rng(orig).uniform(-1, 1, 54321).astype(np.float32)
    ref = audio.resample(torch.from_numpy(x), orig, SR).numpy()
    for block in (1000, 4410, 100000):
        rs = stream.StreamResampler(orig, SR)
        y = np.concatenate([rs.push(x[i:i + block]) for i in range(0, len(x), block)] + [rs.finish()])
        assert y.shape == ref.shape
        np.testing.assert_allclose(y, ref, atol=5e-5)  # float32 rounding only


# ----------------------------------------------------------------------------- export

@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is deprecated in favour of torch.export
def test_export_matches_and_runs_in_a_fresh_process(runs, tmp_path, capsys):
    out = tmp_path / "student.ts"
    assert main(["export", str(runs["attention"]), "--out", str(out)]) == 0
    assert "sample_rate=16000" in capsys.readouterr().out
    ts, eager = torch.jit.load(str(out)), load_classifier(runs["attention"])
    assert ts.sample_rate == SR
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n in (100, SR, SR + 1, 40000, 5 * SR + 77):
            wave = torch.randn(3, n, generator=gen) * 0.1
            torch.testing.assert_close(ts(wave), eager(wave), atol=1e-5, rtol=0)
    wave = torch.randn(2, 30000, generator=gen) * 0.1
    torch.save(wave, tmp_path / "wave.pt")
    code = ("import json, sys, torch, torchaudio; m = torch.jit.load(sys.argv[1]); "
            "x = torch.load(sys.argv[2], weights_only=True); "
            "assert not any(k.startswith('mark2') for k in sys.modules), 'mark2_lib was imported'; "
            "print(json.dumps({'sr': m.sample_rate, 'logits': m(x).tolist()}))")
    res = subprocess.run([sys.executable, "-c", code, str(out), str(tmp_path / "wave.pt")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["sr"] == SR
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(got["logits"]), eager(wave), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- what predict does not judge

def test_too_short_files_get_an_error_row_and_silent_files_no_score(runs, clips, tmp_path, capsys):
    """A 6 ms file is refused by name (not padded into a segment and scored); a file of digital silence,
    and one whose peak stays below -60 dBFS, are labelled "silent" with no p_noise, segments too; a
    file just above the silence level and one just over the minimum length are scored as usual."""
    rng = np.random.default_rng(5)
    files = {
        "short": write(tmp_path / "short.wav", noise(0.006)),
        "zeros": write(tmp_path / "zeros.wav", np.zeros(2 * SR, np.float32)),
        "hiss": write(tmp_path / "hiss.wav", (10 ** (-66 / 20) * rng.uniform(-1, 1, 2 * SR)).astype(np.float32),
                      subtype="FLOAT"),
        "quiet": write(tmp_path / "quiet.wav", (10 ** (-54 / 20) * rng.uniform(-1, 1, 2 * SR)).astype(np.float32),
                       subtype="FLOAT"),
        "just_long_enough": write(tmp_path / "just.wav", noise(0.5)),
    }
    out = tmp_path / "p.csv"
    rc = main(["predict", str(runs["mean"]), *map(str, files.values()), clips[0].as_posix(), "--out", str(out),
               "--segments", "--engine", "serial", "--no-progress"])
    assert rc == 1  # a file was refused
    table = read_csv(out).set_index("path")
    short = table.loc[str(files["short"])]
    assert short["p_noise"] == "" and short["label"] == "" and short["n_segments"] == ""
    assert short["error"] == f"{files['short']}: too short to judge: 0.006 s of audio, under the minimum of 0.5 s " \
                             "(min_seconds, predict --min-seconds)"
    for name in ("zeros", "hiss"):
        row = table.loc[str(files[name])]
        assert (row["p_noise"], row["label"], row["error"], row["n_segments"]) == ("", "silent", "", "3"), name
    for name in ("quiet", "just_long_enough"):
        row = table.loc[str(files[name])]
        assert row["label"] in ("clean", "noise") and 0 <= float(row["p_noise"]) <= 1 and row["error"] == "", name
    segs = read_csv(tmp_path / "p_segments.csv")
    silent = segs[segs["path"] == str(files["zeros"])]
    assert len(silent) == 3 and (silent["label"] == "silent").all() and (silent["p_noise"] == "").all()
    assert str(files["short"]) not in set(segs["path"])
    err = capsys.readouterr().err
    assert re.search(r"^6 files: 5 scored \(\d noise, \d clean, 2 silent\), 1 failed$", err, re.M), err

    # turned off: every file is scored as before, the same p_noise as the whole-file reference
    clips_df, _ = predict.predict_paths(runs["mean"], [files["short"], files["zeros"]], progress=False,
                                        min_seconds=0, silence_dbfs=None)
    assert (clips_df["error"] == "").all() and clips_df["label"].isin(["clean", "noise"]).all()
    for path, p in zip((files["short"], files["zeros"]), clips_df["p_noise"]):
        assert p == pytest.approx(whole_file(runs["mean"], path)[0], abs=1e-5)


def test_the_silence_and_length_settings_are_checked_and_reach_the_corpus_jobs(runs, tmp_path):
    from mark2_lib.jobs import score

    with pytest.raises(ValueError, match="min_seconds=-1"):
        predict.predict_paths(runs["mean"], [tmp_path], min_seconds=-1)
    with pytest.raises(ValueError, match="silence_dbfs=6"):
        predict.predict_paths(runs["mean"], [tmp_path], silence_dbfs=6)
    zeros = write(tmp_path / "in" / "zeros.wav", np.zeros(SR, np.float32))
    write(tmp_path / "in" / "short.wav", noise(0.1))
    out = tmp_path / "p.jsonl"
    info = score.predict_job(runs["mean"], [tmp_path / "in"], out, engine="serial", progress=False, segments=True)
    rows = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["zeros.wav"]["p_noise"] is None and rows["zeros.wav"]["label"] == "silent"
    assert "too short to judge: 0.100 s" in rows["short.wav"]["error"] and rows["short.wav"]["label"] == ""
    assert list(info["segments"]["label"]) == ["silent"] and np.isnan(info["segments"]["p_noise"]).all()
    # a longer minimum is part of the job's settings: it rescored, and now refuses the silent 1 s file too
    out2 = tmp_path / "p2.jsonl"
    score.predict_job(runs["mean"], [zeros], out2, engine="serial", progress=False, min_seconds=1.5)
    assert "under the minimum of 1.5 s" in json.loads(out2.read_text())["error"]
