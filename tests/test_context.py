"""Tests for mark2_lib.context (clip-wide frame-energy statistics) and the models that read them
(`ModelConfig.clip_context`): against a numpy reference, padding, level, the wrapper and TorchScript."""
import copy
import json

import numpy as np
import pytest
import torch

from mark2_lib import audio
from mark2_lib.config import ModelConfig, audio_config
from mark2_lib.context import clip_context, context_size, dense_level_stats, frame_energy_db, level_stats
from mark2_lib.models import ClipClassifier, WaveformClassifier
from mark2_lib.run_folders import load_classifier
from mark2_lib.timing import macs_per_second

AUDIO = audio_config("student")  # clip framing, 32 bands
SMALL = ModelConfig(stem_channels=8, channels=(12, 16), head_hidden=16, dropout=0.0, level_norm=True,
                    stats_pooling=True, clip_context="level_stats")


def reference_level_stats(clip: np.ndarray) -> np.ndarray:
    """One clip's valid segments [S, n_mels, frames] (dB) -> [p95 - p10, p95 - p50, p50 - p10, std], in float64."""
    energy = np.array([[10 * np.log10(np.sum(10 ** (clip[s, :, t] / 10))) for t in range(clip.shape[2])]
                       for s in range(clip.shape[0])]).ravel()
    p10, p50, p95 = (np.percentile(energy, q) for q in (10, 50, 95))  # linear interpolation, as torch.quantile
    return np.array([p95 - p10, p95 - p50, p50 - p10, energy.std()])


def padded_batch(seed: int = 0):
    """Three clips of 3, 1 and 2 segments, padded to 3 with values that must not count (huge)."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(3, 3, 6, 7, generator=g, dtype=torch.float64) * 15 - 40
    mask = torch.tensor([[True, True, True], [True, False, False], [True, True, False]])
    feats[~mask] = 1e4
    return feats, mask


@pytest.mark.parametrize("shape", [(3, 1, 6, 7), (2, 3, 32, 51), (1, 5, 4, 1)])
def test_dense_level_stats_match_the_numpy_reference_and_level_stats(shape):
    """The export graph's branch-free statistics (one sort): the numpy reference per clip, and `level_stats`
    with every segment valid, up to float rounding."""
    feats = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)), dtype=torch.float64) * 15 - 40
    got = dense_level_stats(feats)
    want = np.stack([reference_level_stats(clip.numpy()) for clip in feats])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(got, level_stats(feats, torch.ones(shape[:2], dtype=torch.bool)), rtol=1e-10, atol=1e-9)


def test_level_stats_match_the_numpy_reference_and_ignore_padding():
    feats, mask = padded_batch()
    got = level_stats(feats, mask)
    for i in range(3):
        want = reference_level_stats(feats[i][mask[i]].numpy())
        np.testing.assert_allclose(got[i].numpy(), want, rtol=1e-9, atol=1e-9)
    assert clip_context("level_stats", feats, mask).shape == (3, context_size("level_stats")) == (3, 4)


def test_frame_energy_is_the_summed_power_in_db():
    x = torch.tensor([[[-10.0, 0.0], [-10.0, 3.0]]], dtype=torch.float64)  # [1, n_mels=2, frames=2]
    want = torch.tensor([[10 * np.log10(0.2), 10 * np.log10(1 + 10 ** 0.3)]], dtype=torch.float64)
    torch.testing.assert_close(frame_energy_db(x), want)


def test_level_stats_do_not_depend_on_the_clips_gain():
    feats, mask = padded_batch(1)
    torch.testing.assert_close(level_stats(feats + 17.0, mask), level_stats(feats, mask))


def test_a_clip_without_a_valid_segment_is_refused():
    feats, mask = padded_batch()
    mask[1] = False
    with pytest.raises(ValueError, match="at least one valid segment"):
        level_stats(feats, mask)


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="clip_context='stnr'"):
        ModelConfig(clip_context="stnr")
    with pytest.raises(ValueError, match="clip_context='stnr'"):
        context_size("stnr")


def test_without_clip_context_config_and_weights_are_those_of_saved_runs():
    cfg = ModelConfig()
    assert "clip_context" not in cfg.to_dict() and ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.from_dict(SMALL.to_dict()).clip_context == "level_stats"
    head = ClipClassifier(AUDIO, ModelConfig()).head
    assert head.context_norm is None and not any("context" in k for k in head.state_dict())


def make_model(seed: int = 0) -> ClipClassifier:
    """A clip-context model in eval mode with non-trivial context BatchNorm statistics."""
    torch.manual_seed(seed)
    model = ClipClassifier(AUDIO, SMALL)
    norm = model.head.context_norm
    norm.running_mean.copy_(torch.tensor([30.0, 15.0, 15.0, 10.0]))
    norm.running_var.copy_(torch.tensor([50.0, 20.0, 20.0, 10.0]))
    return model.eval()


def test_a_segments_logits_read_the_rest_of_its_clip():
    """With clip context, changing one segment moves the others' logits; without, it does not."""
    feats = torch.randn(1, 3, AUDIO.n_mels, AUDIO.n_frames, generator=torch.Generator().manual_seed(0)) * 10 - 40
    louder = feats.clone()
    louder[0, 2] += 25.0  # only the last segment changes
    mask = torch.ones(1, 3, dtype=torch.bool)
    for cfg, moves in ((SMALL, True), (ModelConfig(**{**SMALL.to_dict(), "clip_context": "none"}), False)):
        torch.manual_seed(0)
        model = ClipClassifier(AUDIO, cfg).eval()
        with torch.no_grad():
            a, b = model(feats, mask)[1][0, 0], model(louder, mask)[1][0, 0]
        assert (not torch.allclose(a, b)) == moves


def test_padding_segments_never_change_a_clips_logits():
    model = make_model()
    feats, mask = padded_batch()
    feats = torch.randn(3, 3, AUDIO.n_mels, AUDIO.n_frames, generator=torch.Generator().manual_seed(2)) * 10 - 40
    with torch.no_grad():
        clip_logits, _ = model(feats, mask)
        for i in range(3):
            alone, _ = model(feats[i][mask[i]][None], torch.ones(1, int(mask[i].sum()), dtype=torch.bool))
            torch.testing.assert_close(clip_logits[i], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("n_samples", [9000, 32000, 40123])
@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_waveform_classifier_and_torchscript_equal_the_clip_classifier_on_cached_features(n_samples, fused):
    model = make_model()
    wrapped = WaveformClassifier(AUDIO, copy.deepcopy(model)).eval()
    if fused:
        wrapped.fuse()
    scripted = torch.jit.script(wrapped)
    waves = 0.1 * torch.randn(2, n_samples, generator=torch.Generator().manual_seed(n_samples))
    waves[1] *= torch.linspace(0.01, 1.0, n_samples)  # a level that changes across the clip
    with torch.no_grad():
        got_clip, got_seg = wrapped.segment_and_clip_logits(waves)
        for i, w in enumerate(waves):
            feats = audio.clip_features(w, AUDIO)  # what the feature cache stores
            ref_clip, ref_seg = model(feats[None], torch.ones(1, feats.shape[0], dtype=torch.bool))
            torch.testing.assert_close(got_clip[i], ref_clip[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(got_seg[i], ref_seg[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(scripted(waves), got_clip, atol=1e-5, rtol=1e-5)


def test_a_saved_run_loads_with_its_clip_context(tmp_path):
    model = make_model()
    loaded = load_classifier(save_run(tmp_path, model))
    waves = 0.1 * torch.randn(2, 24000, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(loaded(waves), WaveformClassifier(AUDIO, model).eval()(waves), atol=1e-5, rtol=1e-5)


def test_macs_count_the_wider_head():
    plain = ModelConfig(**{**SMALL.to_dict(), "clip_context": "none"})
    extra = macs_per_second(ClipClassifier(AUDIO, SMALL)) - macs_per_second(ClipClassifier(AUDIO, plain))
    # 4 more inputs to the head's first layer (16 units), once per segment, 2 segments per second of audio
    assert extra == 4 * 16 * 2


def save_run(run_dir, model: ClipClassifier, cfg: ModelConfig = SMALL):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({"audio": AUDIO.to_dict(), "model": cfg.to_dict()}))
    torch.save(model.encoder.state_dict(), run_dir / "encoder.pt")
    torch.save(model.head.state_dict(), run_dir / "head.pt")
    return run_dir


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_predict_scores_each_file_with_its_whole_clips_context(tmp_path, pooling):
    """Segments of several files share batches through the encoder; each file's head reads that file's context
    only: the result equals the whole-file model, a short file among long ones and a batch split included."""
    import soundfile as sf

    from mark2_lib.inference.predict import predict_paths

    cfg = ModelConfig(**{**SMALL.to_dict(), "pooling": pooling})
    torch.manual_seed(0)
    model = ClipClassifier(AUDIO, cfg)
    model.head.context_norm.running_mean.copy_(torch.tensor([30.0, 15.0, 15.0, 10.0]))
    model.head.context_norm.running_var.copy_(torch.tensor([50.0, 20.0, 20.0, 10.0]))
    run = save_run(tmp_path / "run", model.eval(), cfg)
    rng, paths = np.random.default_rng(0), []
    for i, seconds in enumerate((7.3, 1.2, 4.0)):
        x = rng.uniform(-1, 1, int(seconds * 16000)) * np.repeat(rng.uniform(0.01, 0.6, int(seconds * 4) + 1), 4000)[
            :int(seconds * 16000)]
        paths.append(tmp_path / "audio" / f"f{i}.wav")
        paths[-1].parent.mkdir(exist_ok=True)
        sf.write(str(paths[-1]), x.astype(np.float32), 16000, subtype="FLOAT")
    clips, segs = predict_paths(run, paths, batch_size=5, segments=True, progress=False, block_frames=7919)
    whole = load_classifier(run)
    for i, path in enumerate(paths):
        with torch.no_grad():
            clip, seg = whole.segment_and_clip_logits(audio.load_audio(path, 16000)[None])
        assert clips["error"][i] == ""
        assert abs(clips["p_noise"][i] - torch.softmax(clip, -1)[0, 1].item()) < 1e-5
        got = segs[segs["path"] == str(path)]["p_noise"].to_numpy()
        np.testing.assert_allclose(got, torch.softmax(seg, -1)[0, :, 1].numpy(), atol=1e-5)


def test_predict_runs_each_files_head_as_soon_as_its_segments_are_encoded(tmp_path, monkeypatch):
    """Memory stays bounded by the file being read: when a file's head runs, no earlier file still holds
    its segment features, and the head of each file runs before the last file has been read."""
    import soundfile as sf

    from mark2_lib.inference import predict

    torch.manual_seed(0)
    run = save_run(tmp_path / "run", ClipClassifier(AUDIO, SMALL).eval(), SMALL)
    rng, paths = np.random.default_rng(1), []
    for i in range(6):
        paths.append(tmp_path / "audio" / f"f{i}.wav")
        paths[-1].parent.mkdir(exist_ok=True)
        sf.write(str(paths[-1]), rng.uniform(-0.5, 0.5, 3 * 16000).astype(np.float32), 16000, subtype="FLOAT")
    holding, order, real_head = [], [], predict._clip_head

    def head(model, clip):
        order.append(clip.path.name)
        holding.append(sum(1 for c in clips_seen if c.features))
        real_head(model, clip)
        assert clip.features == []  # freed

    clips_seen = []
    real_clip = predict._Clip
    monkeypatch.setattr(predict, "_Clip", lambda *a, **k: clips_seen.append(real_clip(*a, **k)) or clips_seen[-1])
    monkeypatch.setattr(predict, "_clip_head", head)
    predict.predict_paths(run, paths, batch_size=4, progress=False)
    assert order == [p.name for p in paths]
    assert max(holding) <= 2, holding  # the file whose head runs, and at most the one being read


def test_torchscript_export_keeps_the_clip_context(tmp_path):
    from mark2_lib.inference.export import export_run

    model = make_model()
    run = save_run(tmp_path, model)
    ts = torch.jit.load(str(export_run(run, tmp_path / "student.ts")))
    waves = 0.1 * torch.randn(1, 20000, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(ts(waves), WaveformClassifier(AUDIO, model).eval()(waves), atol=1e-5, rtol=1e-5)
