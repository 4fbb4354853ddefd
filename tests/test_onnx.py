"""Tests for the ONNX export (mark2_lib.inference.onnx_export, onnx_graph) and ONNX Runtime inference
(onnx_model, `mark2 predict model.onnx`), against the PyTorch model of two runs trained on the tiny data:
the student's front end (clip framing) with attention pooling, the per-segment one with max pooling, and the
student's with the whole clip's level statistics (clip context).

Every test needs the `onnx` extra. Without it every test skips, saying how to install it, except under CI
($CI 1/true/yes, which .ci/run sets), where each one fails instead: CI installs the extra.
"""
import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import onnx_missing, require_or_skip

import mark2_lib
from mark2_lib.audio import LogMel, load_audio, n_segments
from mark2_lib.cli import main
from mark2_lib.config import CLASSES, AudioConfig, TrainConfig, audio_config, model_config
from mark2_lib.data import Dataset, FeatureCache
from mark2_lib.errors import DataError
from mark2_lib.inference import onnx_export
from mark2_lib.inference.export import export_format
from mark2_lib.inference.onnx_model import OnnxClassifier
from mark2_lib.inference.onnx_stft import FactoredLogMel, dft_factors
from mark2_lib.inference.predict import predict_paths
from mark2_lib.run_folders import load_classifier
from mark2_lib.train import train_run

TOLERANCE = 1e-4  # max |p_noise(ONNX Runtime) - p_noise(PyTorch)|
MISSING = onnx_missing()


@pytest.fixture(scope="session", autouse=True)
def _onnx_extra():
    """Every test here needs the extra: skip without it, fail without it under CI. Session-scoped, so that it
    runs before the session-scoped tiny data is built."""
    if MISSING:
        require_or_skip(MISSING, "the ONNX tests (tests/test_onnx.py)")


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    """Three runs trained for one epoch on the tiny data: "clip" (the student's front end, attention pooling),
    "segment" (AudioConfig(): per-segment framing, max pooling) and "context" (as "clip", with the whole clip's
    level statistics, `clip_context="level_stats"`), each with its ONNX export."""
    manifest, features, audio_cfg = tiny_data
    root = tmp_path_factory.mktemp("onnx_runs")
    student_audio = audio_config("student")
    student_features = FeatureCache(manifest.root.parent / "cache", student_audio).features(manifest, progress=False)
    cfg = TrainConfig(alpha=0.0, epochs=1, lr=1e-2, batch_size=8, seed=0, progress=False)
    small = dict(stem_channels=8, channels=(12, 16), head_hidden=16)
    out = {}
    for name, audio, feats, pooling, context in (("clip", student_audio, student_features, "attention", "none"),
                                                 ("segment", audio_cfg, features, "max", "none"),
                                                 ("context", student_audio, student_features, "attention",
                                                  "level_stats")):
        run_dir = root / name
        model_cfg = model_config("student", pooling=pooling, clip_context=context, **small)
        train_run(run_dir, Dataset(manifest, feats), cfg, audio, model_cfg, resume=False)
        out[name] = (run_dir, onnx_export.export_onnx(run_dir, root / f"{name}.onnx"))
    return out


@pytest.fixture(scope="module")
def waves(tiny_data):
    """The 48 tiny-data clips (2 s each) at 16 kHz, `[48, 32000]`."""
    manifest, _, audio_cfg = tiny_data
    return torch.stack([load_audio(p, audio_cfg.sample_rate) for p in manifest.df["path"]])


def p_noise(logits) -> np.ndarray:
    return torch.softmax(torch.as_tensor(logits), dim=-1)[:, 1].numpy()


@pytest.mark.parametrize("n_fft,win_length,hop_length", [(256, 256, 400), (512, 512, 320), (202, 150, 101),
                                                         (96, 64, 48)])
def test_the_factored_log_mel_equals_the_fft_front_end(n_fft, win_length, hop_length):
    """The graph's log-mel (two-stage DFT as matrix products) gives LogMel's rfft log-mel, for student and
    teacher sizes, an n_fft of 2 x prime (one dense stage), a window shorter than n_fft, frames wider than
    n_fft; every frame, every band, at levels from quiet to loud."""
    cfg = AudioConfig(n_fft=n_fft, win_length=win_length, hop_length=hop_length, n_mels=24)
    logmel = LogMel(cfg)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4000, generator=gen) * torch.tensor([[1e-3], [0.1], [3.0]])
    frames = logmel.windowed_frames(x, centre=True) / logmel.window.where(logmel.window > 0, 1.0)  # unwindowed
    wide = torch.nn.functional.pad(frames, (0, 37))                      # samples past n_fft are not read
    got = FactoredLogMel(n_fft, logmel.window, logmel.fb)(wide)
    want = logmel.frames_db(x, centre=True)
    assert dft_factors(n_fft)[0] * dft_factors(n_fft)[1] == n_fft
    assert got.shape == want.shape
    assert float((got - want).abs().max()) < 1e-4 and float((got - want).abs().mean()) < 5e-6  # dB


@pytest.mark.parametrize("name", ["clip", "segment", "context"])
def test_onnx_runtime_matches_pytorch_on_the_test_data(runs, waves, name):
    """Every tiny-data clip cut to lengths shorter than a segment, one and two segments exactly, and odd lengths
    (each in batches of 8 and of 1): clip p_noise within 1e-4, the same number of segments."""
    run_dir, path = runs[name]
    model, onnx_model = load_classifier(run_dir), OnnxClassifier(path)
    seg = model.audio.segment_samples
    worst = 0.0
    for n in (1, 100, seg // 3, seg, seg + 1, seg + seg // 2, 2 * seg, 27_777, 31_999):
        for batch in (8, 1):
            for x in waves[:, :n].split(batch) if batch == 8 else waves[::6, :n].split(1):
                with torch.inference_mode():
                    want, want_seg = model.segment_and_clip_logits(x)
                got, got_seg, _ = onnx_model(x.numpy())
                assert got.shape == (len(x), 2) and got_seg.shape == (len(x), n_segments(n, model.audio), 2)
                worst = max(worst, np.abs(p_noise(got) - p_noise(want)).max())
    assert worst <= TOLERANCE
    with torch.inference_mode():  # the run's scores vary: the comparison can tell models apart
        assert np.ptp(p_noise(model(waves))) > 0.01


@pytest.mark.parametrize("name", ["clip", "segment", "context"])
def test_predict_with_the_onnx_file_gives_the_run_folders_csv(runs, tiny_data, tmp_path, name):
    """`mark2 predict model.onnx` against `mark2 predict RUN_DIR`: same rows, labels, segment counts and error
    rows, p_noise within 1e-4; on the serial engine and on worker processes."""
    manifest, _, _ = tiny_data
    run_dir, path = runs[name]
    folder = tmp_path / "clips"
    folder.mkdir()
    for p in manifest.df["path"]:
        (folder / p.rsplit("/", 1)[1]).symlink_to(p)
    x = load_audio(manifest.df["path"][0], 16000).numpy()
    sf.write(folder / "long.wav", np.concatenate([x] * 4 + [x[:4321]]), 16000, subtype="FLOAT")  # 8.27 s
    (folder / "zz_broken.wav").write_text("not audio\n" * 10)
    csvs = {}
    for what, model, engine in (("run", run_dir, "serial"), ("onnx", path, "serial"), ("onnx-local", path, "local")):
        csvs[what] = tmp_path / f"{what}.csv"
        rc = main(["predict", str(model), str(folder), "--out", str(csvs[what]), "--segments", "--engine", engine,
                   "--workers", "2", "--shard-size", "20", "--batch-size", "5", "--no-progress"])
        assert rc == 1  # the broken file
    read = {k: pd.read_csv(v, keep_default_na=False, dtype={"error": str}) for k, v in csvs.items()}
    want = read["run"]
    assert len(want) == 50 and "not a readable audio file" in want["error"].iloc[-1]
    ok = want["error"] == ""
    for what in ("onnx", "onnx-local"):
        got = read[what]
        assert list(got.columns) == list(want.columns)
        pd.testing.assert_frame_equal(got.drop(columns="p_noise"), want.drop(columns="p_noise"))
        assert np.abs(got["p_noise"][ok].astype(float) - want["p_noise"][ok].astype(float)).max() <= TOLERANCE
        seg_got, seg_want = (pd.read_csv(tmp_path / f"{w}_segments.csv") for w in (what, "run"))
        pd.testing.assert_frame_equal(seg_got.drop(columns="p_noise"), seg_want.drop(columns="p_noise"))
        assert np.abs(seg_got["p_noise"] - seg_want["p_noise"]).max() <= TOLERANCE


@pytest.mark.parametrize("name", ["clip", "context"])
def test_streamed_onnx_scoring_equals_one_graph_run_on_the_whole_file(runs, tmp_path, name):
    """A file read in small blocks and scored 3 segments per graph run: the segment logits of the whole file
    in one run, up to float rounding (chunks overlap by a segment, so no frame sees a chunk's edge). A
    clip-context model reads the whole file's statistics, so it is scored in one run after the blocks are read."""
    _, path = runs[name]
    onnx_model = OnnxClassifier(path)
    gen = np.random.default_rng(3)
    x = (gen.standard_normal(16000 * 9 + 555) * np.repeat(gen.uniform(0.01, 0.5, 10), 16000)[:16000 * 9 + 555])
    sf.write(tmp_path / "long.wav", x.astype(np.float32), 16000, subtype="FLOAT")
    seg, scores, n = onnx_model.stream_file(tmp_path / "long.wav", batch_size=3, block_frames=5000)
    clip, want_seg, want_scores = onnx_model(x[None].astype(np.float32))
    assert n == len(x) and seg.shape == want_seg[0].shape == (n_segments(n, onnx_model.audio), 2)
    np.testing.assert_allclose(seg, want_seg[0], atol=1e-5)
    np.testing.assert_allclose(scores, want_scores[0], atol=1e-5)
    pooled = onnx_model.pool(torch.from_numpy(seg), torch.from_numpy(scores)).numpy()
    np.testing.assert_allclose(pooled, clip[0], atol=1e-5)
    clips, _ = predict_paths(path, [tmp_path / "long.wav"], progress=False, block_frames=7000, batch_size=2)
    assert clips["p_noise"][0] == pytest.approx(p_noise(clip)[0], abs=1e-5)
    if name == "context":  # the clip's other segments move a segment's logits: chunks would not do
        _, first, _ = onnx_model(x[None, :16000].astype(np.float32))
        assert np.abs(first[0, 0] - want_seg[0, 0]).max() > 1e-3


def test_metadata_round_trips(runs):
    import onnx

    run_dir, path = runs["clip"]
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["sample_rate"] == "16000" and json.loads(meta["classes"]) == list(CLASSES) == ["clean", "noise"]
    assert meta["mark2_version"] == mark2_lib.__version__
    assert json.loads(meta["mark2_config"]) == json.loads((run_dir / "config.json").read_text())
    model = OnnxClassifier(path)
    assert (model.sample_rate, model.classes, model.version) == (16000, ("clean", "noise"), mark2_lib.__version__)
    assert model.audio == audio_config("student") and model.pooling == "attention"


def test_an_onnx_file_that_is_not_a_mark2_export_is_refused_naming_it(runs, tiny_data, tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    manifest, _, _ = tiny_data
    plain = tmp_path / "identity.onnx"
    graph = helper.make_graph([helper.make_node("Identity", ["waveform"], ["logits"])], "plain",
                              [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["B", "N"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", "N"])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(plain))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    for path, message in ((plain, "not a mark2 classifier export (no mark2 metadata"),
                          (corrupt, "not a loadable ONNX model")):
        with pytest.raises(DataError, match=f"{path}: {message}".replace("(", r"\(")):
            OnnxClassifier(path)
        assert main(["predict", str(path), manifest.df["path"][0], "--out", str(tmp_path / "p.csv"),
                     "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"error: {path}: {message}" in err, err
    assert main(["predict", str(tmp_path / "missing.onnx"), manifest.df["path"][0], "--out",
                 str(tmp_path / "p.csv"), "--no-progress"]) == 2
    assert "missing.onnx: ONNX file not found" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()


def test_a_failed_export_check_says_so_and_leaves_no_file(runs, tmp_path, monkeypatch, capsys):
    """The check loads the bytes about to be written into ONNX Runtime: given another run's graph (other weights)
    it finds the difference, and the export fails without writing anything."""
    other_run, _ = runs["segment"]
    run_dir, _ = runs["clip"]
    real = onnx_export.onnx_bytes
    monkeypatch.setattr(onnx_export, "onnx_bytes", lambda model, config: real(load_classifier(other_run), config))
    out = tmp_path / "student.onnx"
    with pytest.raises(onnx_export.ExportCheckError, match=r"student\.onnx: not written: .*p_noise differs"):
        onnx_export.export_onnx(run_dir, out)
    assert main(["export", str(run_dir), "--out", str(out)]) == 1
    assert "not written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_export_command_picks_the_format_from_the_extension(runs, tmp_path, capsys):
    run_dir, _ = runs["clip"]
    assert export_format("a.onnx") == "onnx" and export_format("a.ts") == export_format("a.PT") == "torchscript"
    assert export_format("model.bin", "onnx") == "onnx"
    for out, fmt, message in (("model.bin", None, "cannot tell the format"), ("a.ts", "onnx", "means torchscript")):
        with pytest.raises(ValueError, match=message):
            export_format(out, fmt)
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "a.ts")]) == 2
    assert "the extension .ts means torchscript" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--out", str(tmp_path / "s.onnx")]) == 0
    assert "ONNX" in capsys.readouterr().out and OnnxClassifier(tmp_path / "s.onnx").sample_rate == 16000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.onnx"]


def test_the_onnx_student_judges_silent_and_too_short_files_as_the_run_does(runs, tmp_path):
    """predict_paths with the .onnx file: digital silence is "silent" with no p_noise, a 30 ms file an error row
    naming it, exactly as with the run folder."""
    import soundfile as sf

    from mark2_lib.inference.predict import predict_paths

    sf.write(tmp_path / "zeros.wav", np.zeros(32000, np.float32), 16000)
    sf.write(tmp_path / "short.wav", np.full(480, 0.1, np.float32), 16000)
    run_dir, onnx_path = runs["clip"]
    tables = [predict_paths(m, [tmp_path], progress=False)[0] for m in (run_dir, onnx_path)]
    for t in tables:
        assert t["label"].tolist() == ["", "silent"] and t["p_noise"].isna().all()
        assert "short.wav: too short to judge: 0.030 s" in t["error"][0] and t["error"][1] == ""
    assert tables[0].equals(tables[1])
