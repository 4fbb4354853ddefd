"""Tests for mark2_lib.models: shapes, padding, pooling, size, MACs, BatchNorm fusion, waveform wrapper,
TorchScript, loading."""
import copy
import json
import os
import pickle

import pytest
import torch

from mark2_lib import audio
from mark2_lib.config import (
    POOLINGS,
    AudioConfig,
    ModelConfig,
    audio_config,
    configure,
    model_config,
)
from mark2_lib.models import STD_EPS, ClipClassifier, WaveformClassifier, build_model
from mark2_lib.run_folders import load_classifier
from mark2_lib.timing import count_parameters, macs_per_second

AUDIO = AudioConfig()  # segment framing, 64 bands (the teacher's front end)
CLIP_AUDIO = audio_config("student")  # clip framing, 32 bands
SMALL = ModelConfig(stem_channels=8, channels=(12, 16), head_hidden=16, dropout=0.0)  # fast stand-in


def make_model(cfg: ModelConfig, seed: int = 0, audio_cfg: AudioConfig = AUDIO) -> ClipClassifier:
    """A model in eval mode whose BatchNorm statistics and affine parameters are random, not identity."""
    torch.manual_seed(seed)
    model = ClipClassifier(audio_cfg, cfg)
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * (20.0 if m is model.encoder.input_norm else 0.3))
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + (50.0 if m is model.encoder.input_norm else 0.5))
            m.weight.data.copy_(1 + 0.2 * torch.randn(n, generator=g))
            m.bias.data.copy_(0.2 * torch.randn(n, generator=g))
    return model.eval()


def segments(n: int, seed: int) -> torch.Tensor:
    """n log-mel-like segments [n, n_mels, frames] (dB values around -40)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, AUDIO.n_mels, AUDIO.n_frames, generator=g) * 10 - 40


def reference_clip_logits(model: ClipClassifier, segs: torch.Tensor) -> torch.Tensor:
    """Pool per-segment logits computed one segment at a time, written out per pooling mode."""
    outs = [model.segment_forward(s[None]) for s in segs]
    logits = torch.cat([o[0] for o in outs])             # [n, C]
    emb = torch.cat([o[1] for o in outs])                # [n, D]
    if model.pooling == "mean":
        return logits.mean(dim=0)
    if model.pooling == "max":
        return logits.max(dim=0).values
    w = torch.softmax(model.head.attention(emb).squeeze(-1), dim=0)  # attention
    return (w[:, None] * logits).sum(dim=0)


# ----------------------------------------------------------------------------- shapes, padding, pooling

@pytest.mark.parametrize("size", ["student", "teacher"])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_shapes_and_pooling_match_per_segment_reference(size, pooling):
    model = make_model(model_config(size, pooling=pooling))
    lengths = [3, 1, 2]
    clips = [segments(n, seed=i) for i, n in enumerate(lengths)]
    feats = torch.zeros(len(lengths), max(lengths), AUDIO.n_mels, AUDIO.n_frames)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.bool)
    for i, c in enumerate(clips):
        feats[i, :len(c)], mask[i, :len(c)] = c, True
    with torch.no_grad():
        clip_logits, seg_logits = model(feats, mask)
        assert clip_logits.shape == (3, 2) and seg_logits.shape == (3, 3, 2)
        for i, c in enumerate(clips):
            ref_seg = torch.cat([model.segment_forward(s[None])[0] for s in c])
            torch.testing.assert_close(seg_logits[i, :len(c)], ref_seg, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(clip_logits[i], reference_clip_logits(model, c), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_padding_segments_never_change_a_clips_logits(pooling):
    model = make_model(ModelConfig(**{**SMALL.to_dict(), "pooling": pooling}))
    a, b = segments(2, seed=1), segments(5, seed=2)
    feats = torch.stack([torch.cat([a, torch.zeros(3, AUDIO.n_mels, AUDIO.n_frames)]), b])
    feats[0, 2] = float("nan")   # garbage in the padding: NaN, inf and huge values
    feats[0, 3] = float("inf")
    feats[0, 4] = 1e30
    mask = torch.tensor([[True, True, False, False, False], [True] * 5])
    with torch.no_grad():
        clip, seg = model(feats, mask)
        alone, _ = model(a[None], torch.ones(1, 2, dtype=torch.bool))
    assert torch.isfinite(clip).all() and torch.isfinite(seg).all()
    torch.testing.assert_close(clip[0], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(clip[0], reference_clip_logits(model, a), atol=1e-5, rtol=1e-5)


def test_padding_never_reaches_batchnorm_statistics_in_training():
    torch.manual_seed(0)
    model = ClipClassifier(AUDIO, SMALL).train()
    twin = ClipClassifier(AUDIO, SMALL).train()
    twin.load_state_dict(model.state_dict())
    a, b = segments(2, seed=3), segments(4, seed=4)
    feats = torch.full((2, 4, AUDIO.n_mels, AUDIO.n_frames), float("nan"))
    feats[0, :2], feats[1] = a, b
    mask = torch.tensor([[True, True, False, False], [True] * 4])
    model(feats, mask)
    twin.segment_forward(torch.cat([a, b]))  # the same real segments, no padding at all
    for (name, x), (_, y) in zip(model.state_dict().items(), twin.state_dict().items()):
        assert torch.isfinite(x.float()).all(), name
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-6, msg=name)


# ----------------------------------------------------------------------------- size and cost

def test_student_is_at_least_20x_smaller_than_teacher():
    student, teacher = count_parameters(build_model("student")), count_parameters(build_model("teacher"))
    assert student * 20 <= teacher, (student, teacher)
    assert count_parameters(build_model("student").fuse()) == student  # counted as trained, BatchNorm included


def test_each_size_has_its_front_end_with_the_same_segments():
    student, teacher = audio_config("student"), audio_config("teacher")
    assert teacher == AudioConfig()  # the teacher's features are the ones it was trained on
    assert student.framing == "clip" and student.n_mels * student.n_frames * 2 <= teacher.n_mels * teacher.n_frames
    # the same windows, so the teacher's per-segment soft labels line up with the student's segments
    assert (student.segment_samples, student.hop_samples) == (teacher.segment_samples, teacher.hop_samples)
    assert build_model("student").audio == student and build_model("teacher").audio == teacher
    assert audio_config("student", n_mels=40).n_mels == 40
    with pytest.raises(ValueError, match="size"):
        audio_config("huge")


def unfolded_segment_logits(model: ClipClassifier, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode segment logits of an unfused model, every module called by hand, level norm and stats
    pooling written out with torch's own mean and variance."""
    enc = model.encoder
    if enc.level_norm:
        x = x - x.reshape(x.shape[0], -1).mean(dim=1).reshape(-1, 1, 1)
    x = enc.stem[2](enc.stem[1](enc.stem[0](enc.input_norm(x).unsqueeze(1))))
    for b in enc.blocks:
        y = b.bn2(b.pointwise(torch.relu(b.bn1(b.depthwise(x)))))
        x = torch.relu(y + x) if b.residual else torch.relu(y)
    emb = x.mean(dim=(2, 3))
    if enc.stats_pooling:
        emb = torch.cat([emb, (x.var(dim=(2, 3), unbiased=False) + STD_EPS).sqrt()], dim=1)
    return model.head(emb)


@pytest.mark.parametrize("size", ["student", "teacher"])
def test_fuse_folds_batchnorm_once_without_changing_the_result(size):
    model = make_model(model_config(size))
    x = segments(6, seed=1)
    fused = copy.deepcopy(model).fuse()
    assert fused.encoder.fused and not model.encoder.fused
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.encoder.modules())  # folded: gone
    with torch.no_grad():
        reference = unfolded_segment_logits(model, x)
        torch.testing.assert_close(model.segment_forward(x)[0], reference, atol=1e-5, rtol=1e-5)  # eval, unfused
        torch.testing.assert_close(fused.segment_forward(x)[0], reference, atol=1e-5, rtol=1e-5)
    assert fused.fuse() is fused  # fusing twice changes nothing
    with pytest.raises(RuntimeError, match="inference only"):
        fused.train()
    with pytest.raises(RuntimeError, match="eval"):
        build_model(size).encoder.fuse()  # training mode: no running statistics to fold yet
    model.train()  # training mode runs the BatchNorm modules (batch statistics)
    before = model.encoder.stem[1].running_mean.clone()
    model.segment_forward(x)
    assert not torch.equal(model.encoder.stem[1].running_mean, before)


@pytest.mark.parametrize("groups,kernel", [(1, 3), (8, 3), (1, 1)])
def test_fold_batchnorm_matches_torch_fusion(groups, kernel):
    """The fold against torch.nn.utils.fusion.fuse_conv_bn_eval: same weight, and a bias and output within
    float rounding (its own product order is the one the published runs used)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from mark2_lib.models import fold_batchnorm

    g = torch.Generator().manual_seed(groups + kernel)
    conv = torch.nn.Conv2d(8, 16, kernel, stride=2, padding=kernel // 2, groups=groups, bias=False)
    bn = torch.nn.BatchNorm2d(16)
    with torch.no_grad():
        for t in (conv.weight, bn.weight, bn.bias, bn.running_mean):
            t.copy_(torch.randn(t.shape, generator=g))
        bn.running_var.copy_(torch.rand(16, generator=g) + 0.1)
    conv.eval(), bn.eval()
    ours, theirs = fold_batchnorm(conv, bn), fuse_conv_bn_eval(conv, bn)
    assert not ours.weight.requires_grad and ours.stride == conv.stride and ours.groups == groups
    torch.testing.assert_close(ours.weight, theirs.weight, rtol=0, atol=0)
    torch.testing.assert_close(ours.bias, theirs.bias, rtol=1e-6, atol=1e-6)
    x = torch.randn(2, 8, 9, 11, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), bn(conv(x)), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_state_dict_keys_are_those_of_saved_runs():
    """encoder.pt and head.pt hold these keys: runs saved by earlier versions must keep loading."""
    model = ClipClassifier(AUDIO, ModelConfig(**{**SMALL.to_dict(), "pooling": "attention"}))
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    blocks = [f"blocks.{i}.{name}" for i in (0, 1) for name in
              ["depthwise.weight", *(f"bn1.{k}" for k in bn), "pointwise.weight", *(f"bn2.{k}" for k in bn)]]
    assert list(model.encoder.state_dict()) == ([f"input_norm.{k}" for k in bn] + ["stem.0.weight"]
                                                + [f"stem.1.{k}" for k in bn] + blocks)
    assert list(model.head.state_dict()) == ["net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias",
                                             "attention.weight", "attention.bias"]


def test_macs_per_second_matches_hand_count():
    audio_cfg = AudioConfig(n_mels=16, hop_seconds=0.25)  # 16 x 51 input, 4 segments per second
    model = ClipClassifier(audio_cfg, ModelConfig(stem_channels=4, channels=(6, 8), blocks_per_stage=2,
                                                  head_hidden=5, pooling="mean"))
    # conv MACs = C_out * H_out * W_out * k*k * C_in/groups; 3x3 stride-2 pad-1 maps n -> (n - 1) // 2 + 1
    stem = 4 * 8 * 26 * 9 * 1                                    # 1 -> 4 ch, 16x51 -> 8x26
    stage1 = (4 * 4 * 13 * 9 + 6 * 4 * 13 * 4                     # dw stride 2 (8x26 -> 4x13), pw 4 -> 6
              + 6 * 4 * 13 * 9 + 6 * 4 * 13 * 6)                  # dw stride 1, pw 6 -> 6
    stage2 = (6 * 2 * 7 * 9 + 8 * 2 * 7 * 6                       # dw stride 2 (4x13 -> 2x7), pw 6 -> 8
              + 8 * 2 * 7 * 9 + 8 * 2 * 7 * 8)                    # dw stride 1, pw 8 -> 8
    head = 16 * 5 + 5 * 2                                         # Linear 16 (mean, std of 8) -> 5, Linear 5 -> 2
    per_segment = stem + stage1 + stage2 + head
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert macs_per_second(model, audio_cfg) == pytest.approx(per_segment * 4)
    assert macs_per_second(model.eval()) == pytest.approx(per_segment * 4)  # the model's own front end by default
    assert not model.training  # counted on a copy: the model's mode and statistics are untouched
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert macs_per_second(model.fuse()) == pytest.approx(per_segment * 4)  # the fused stem is counted too


# ----------------------------------------------------------------------------- waveform in

@pytest.mark.parametrize("n_samples", [7000, AUDIO.segment_samples, AUDIO.segment_samples + 8000 + 123, 40000])
@pytest.mark.parametrize("pooling", ["mean", "attention"])
@pytest.mark.parametrize("audio_cfg", [AUDIO, CLIP_AUDIO], ids=["segment", "clip"])
@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_waveform_classifier_equals_clip_classifier_on_clip_features(n_samples, pooling, audio_cfg, fused):
    """Fused with clip framing, the wrapper reads the clip's frames once (`forward_clip_frames`); else per segment."""
    model = make_model(ModelConfig(**{**SMALL.to_dict(), "pooling": pooling}), audio_cfg=audio_cfg)
    wrapped = WaveformClassifier(audio_cfg, copy.deepcopy(model)).eval()
    if fused:
        wrapped.fuse()
    g = torch.Generator().manual_seed(n_samples)
    waves = 0.1 * torch.randn(2, n_samples, generator=g)
    with torch.no_grad():
        got_clip, got_seg = wrapped.segment_and_clip_logits(waves)
        for i, w in enumerate(waves):
            feats = audio.clip_features(w, audio_cfg)  # what the feature cache stores
            assert feats.shape[0] == audio.n_segments(n_samples, audio_cfg) == got_seg.shape[1]
            ref_clip, ref_seg = model(feats[None], torch.ones(1, feats.shape[0], dtype=torch.bool))
            torch.testing.assert_close(got_clip[i], ref_clip[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(got_seg[i], ref_seg[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(wrapped(waves), got_clip, atol=0, rtol=0)


@pytest.mark.parametrize("n_mels", [5, 6])
@pytest.mark.parametrize("hop_length,hop_seconds", [(8, 0.016), (4, 0.02), (4, 0.012), (10, 0.04)])
def test_clip_frames_path_equals_the_per_segment_encoder(n_mels, hop_length, hop_seconds):
    """A fused model with clip framing reads the clip's frames once (Encoder.forward_clip_frames); every
    segment must come out as the per-segment encoder makes it, zero padding at its edges included: odd and
    even frame counts (6, 11, 5 frames), odd and even steps between segments, odd and even band counts."""
    cfg = AudioConfig(sample_rate=1000, segment_seconds=0.04, hop_seconds=hop_seconds, n_fft=16, win_length=16,
                      hop_length=hop_length, n_mels=n_mels, f_min=0.0, f_max=500.0, framing="clip")
    model = make_model(SMALL, audio_cfg=cfg)
    wrapped = WaveformClassifier(cfg, copy.deepcopy(model)).fuse()
    waves = torch.randn(3, 111, generator=torch.Generator().manual_seed(hop_length))
    with torch.no_grad():
        feats = wrapped.features(waves)                                   # [3, S, n_mels, n_frames]
        want = model.encoder(feats.reshape((-1,) + feats.shape[2:]))      # unfused, per segment
        frames = wrapped.logmel.clip_frames(waves)
        got = wrapped.model.encoder.forward_clip_frames(frames, wrapped.frame_step, cfg.n_frames)
        assert feats.shape[1] >= 3
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(wrapped.model.encoder(feats.reshape((-1,) + feats.shape[2:])), want,
                                   atol=1e-5, rtol=1e-5)  # the fused per-segment path
        _, seg_logits = wrapped.segment_and_clip_logits(waves)
    with pytest.raises(RuntimeError, match="fuse"):
        model.encoder.forward_clip_frames(frames, wrapped.frame_step, cfg.n_frames)  # unfused: no folded stem
    torch.testing.assert_close(seg_logits, model.head(want.flatten(1)).reshape(3, -1, 2), atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("audio_cfg", [AUDIO, CLIP_AUDIO], ids=["segment", "clip"])
@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_torchscript_matches_eager(pooling, audio_cfg, fused):
    model = make_model(ModelConfig(**{**SMALL.to_dict(), "pooling": pooling}), audio_cfg=audio_cfg)
    wrapped = WaveformClassifier(audio_cfg, model).eval()
    if fused:  # as export.py scripts it
        wrapped.fuse()
    scripted = torch.jit.script(wrapped)
    for n in (9000, 16000, 37000):
        waves = 0.1 * torch.randn(3, n, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            torch.testing.assert_close(scripted(waves), wrapped(waves), atol=1e-5, rtol=1e-5)
            s_clip, s_seg = scripted.segment_and_clip_logits(waves)
            e_clip, e_seg = wrapped.segment_and_clip_logits(waves)
        torch.testing.assert_close(s_seg, e_seg, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- load_classifier

def _write_run(run_dir, model: ClipClassifier, cfg: ModelConfig, files=("encoder.pt", "head.pt")):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({"audio": AUDIO.to_dict(), "model": cfg.to_dict()}))
    if "encoder.pt" in files:
        torch.save(model.encoder.state_dict(), run_dir / "encoder.pt")
    if "head.pt" in files:
        torch.save(model.head.state_dict(), run_dir / "head.pt")


@pytest.mark.parametrize("missing", ["encoder.pt", "head.pt", "config.json"])
def test_load_classifier_names_the_missing_file(tmp_path, missing):
    cfg = SMALL
    _write_run(tmp_path, make_model(cfg), cfg)
    (tmp_path / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
        load_classifier(tmp_path)


def test_load_classifier_restores_config_and_weights(tmp_path):
    cfg = ModelConfig(**{**SMALL.to_dict(), "pooling": "attention", "channels": (10, 14, 18)})
    model = make_model(cfg, seed=5)
    _write_run(tmp_path, model, cfg)
    loaded = load_classifier(tmp_path)
    assert not loaded.training and not loaded.model.training and loaded.model.encoder.fused
    waves = 0.1 * torch.randn(2, 30000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        unfused = WaveformClassifier(AUDIO, model).eval()(waves)
        torch.testing.assert_close(loaded(waves), unfused, atol=1e-5, rtol=1e-5)
        assert torch.equal(loaded(waves), WaveformClassifier(AUDIO, model).fuse()(waves))  # the same fold


def test_load_classifier_reads_old_configs_and_names_bad_keys(tmp_path):
    cfg = SMALL
    model = make_model(cfg)
    _write_run(tmp_path, model, cfg)
    config = json.loads((tmp_path / "config.json").read_text())
    assert "framing" not in config["audio"]  # segment framing is written as before framing existed
    assert load_classifier(tmp_path).audio == AUDIO  # framing "segment", as it was trained
    # a run saved before level_norm and stats_pooling existed was trained without them
    old_cfg = ModelConfig(**{**SMALL.to_dict(), "level_norm": False, "stats_pooling": False})
    old = make_model(old_cfg, seed=3)
    _write_run(tmp_path, old, old_cfg)
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config["model"]) == set(old_cfg.to_dict()) == set(SMALL.to_dict()) - {"level_norm", "stats_pooling"}
    loaded = load_classifier(tmp_path)
    assert not loaded.model.encoder.level_norm and not loaded.model.encoder.stats_pooling
    waves = 0.1 * torch.randn(2, 24000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(waves), WaveformClassifier(AUDIO, old).eval()(waves), atol=1e-5, rtol=1e-5)
    config["audio"]["window"] = "hann"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json.*unknown AudioConfig fields: \['window'\]"):
        load_classifier(tmp_path)
    config["audio"] = {"framing": "frames"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json.*framing='frames'"):
        load_classifier(tmp_path)
    del config["audio"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json: no 'audio' section"):
        load_classifier(tmp_path)


class RunsCode:
    """Unpickling this calls os.mkdir(path): a visible side effect, as a malicious checkpoint's code would have."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


@pytest.mark.parametrize("name", ["encoder.pt", "head.pt"])
def test_load_classifier_refuses_pickled_code(tmp_path, name):
    """Weights are loaded with weights_only=True: a checkpoint holding a custom object is refused unrun."""
    run, sentinel = tmp_path / "run", tmp_path / "code_ran"
    model = make_model(SMALL)
    _write_run(run, model, SMALL)
    part = model.encoder if name == "encoder.pt" else model.head
    torch.save({**part.state_dict(), "payload": RunsCode(sentinel)}, run / name)
    with pytest.raises(pickle.UnpicklingError, match="weights_only|Weights only"):
        load_classifier(run)
    assert not sentinel.exists(), f"loading {name} ran code from the pickle"


def test_model_config_is_written_as_before_level_norm_and_stats_pooling_when_they_are_off():
    """So the teacher's config.json and run names are unchanged, and its earlier runs resume and are reused."""
    teacher = model_config("teacher")
    assert "level_norm" not in teacher.to_dict() and "stats_pooling" not in teacher.to_dict()
    for cfg in (teacher, model_config("student"), model_config("student", stats_pooling=False)):
        assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_configure_changes_size_and_front_end_from_text():
    model_cfg, audio_cfg = configure("student", "channels=32,48,64 n_mels=48 dropout=0.2 pooling=max")
    assert model_cfg == model_config("student", channels=(32, 48, 64), dropout=0.2, pooling="max")
    assert audio_cfg == audio_config("student", n_mels=48)
    assert configure("student", ["n_fft=400", "win_length=400"], pooling="attention") == (
        model_config("student", pooling="attention"), audio_config("student", n_fft=400, win_length=400))
    assert configure("student", "pooling=max", pooling="attention")[0].pooling == "max"  # the text wins
    assert configure("teacher", "") == (model_config("teacher"), audio_config("teacher"))
    assert configure("student", "channels=64")[0].channels == (64,)
    off = configure("student", "level_norm=false stats_pooling=0")[0]
    assert (off.level_norm, off.stats_pooling) == (False, False)
    assert configure("student", "level_norm=True")[0].level_norm


@pytest.mark.parametrize("framing", ["clip", "segment"])
def test_level_norm_makes_the_prediction_independent_of_recording_level(framing):
    """Mixtures are peak-normalised, so level carries no label: the same recording 20 dB quieter scores the same."""
    audio_cfg = audio_config("student", framing=framing)
    waves = 0.1 * torch.randn(2, 32000, generator=torch.Generator().manual_seed(2))
    for level_norm in (True, False):
        cfg = ModelConfig(**{**SMALL.to_dict(), "level_norm": level_norm})
        wrapped = WaveformClassifier(audio_cfg, make_model(cfg, audio_cfg=audio_cfg)).eval()
        with torch.no_grad():
            loud, quiet = wrapped.segment_and_clip_logits(waves), wrapped.segment_and_clip_logits(0.1 * waves)
        same = all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(loud, quiet))
        assert same == level_norm, level_norm


@pytest.mark.parametrize("text, message", [
    ("chanels=32,48,64", r"chanels='32,48,64': expected FIELD=VALUE with FIELD one of .*channels"),
    ("n_mels", r"n_mels='': expected int \(default 32\)"),
    ("n_mels=48.5", r"n_mels='48.5': expected int"),
    ("channels=a,b", r"channels='a,b': expected whole numbers separated by commas"),
    ("f_min=low", r"f_min='low': expected float"),
    ("level_norm=maybe", r"level_norm='maybe': expected true or false \(default True\)"),
    ("n_mels=0", r"AudioConfig.n_mels=0 is invalid"),
    ("pooling=avg", r"pooling='avg'; expected one of"),
])
def test_configure_names_the_bad_field(text, message):
    with pytest.raises(ValueError, match=message):
        configure("student", text)
