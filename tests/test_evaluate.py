"""Tests for mark2_lib.evaluate (gap recovery, breakdowns, ECE) and mark2_lib.timing (the speed table)."""
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mark2_lib.audio import n_segments
from mark2_lib.data import Manifest
from mark2_lib.evaluate import breakdown, gap_recovery, mean_std_table, snr_band_auc, teacher_agreement
from mark2_lib.metrics import ece_floor, expected_calibration_error
from mark2_lib.models import WaveformClassifier, build_model
from mark2_lib.timing import join_clips, pass_times, speed_audio, speed_table

SR = 16000


def test_join_clips_concatenates_in_order_and_drops_the_partial_tail():
    clips = [np.full(SR, i, dtype=np.float64) for i in range(25)]  # 25 s of 1 s clips, each its index
    waves = join_clips(clips, SR, seconds=10.0)
    assert waves.shape == (2, 10 * SR) and waves.dtype == torch.float32
    expected = torch.cat([torch.full((SR,), float(i)) for i in range(20)]).reshape(2, 10 * SR)
    assert torch.equal(waves, expected)


def test_join_clips_names_the_shortfall():
    with pytest.raises(ValueError, match=r"2\.0 s of audio is less than one 10 s waveform"):
        join_clips([np.zeros(SR), np.zeros(SR)], SR, seconds=10.0)


def test_gap_recovery_and_mean_std_table():
    per_seed = pd.DataFrame({"model": ["kd_student", "kd_student", "hard_only_student", "hard_only_student", "teacher"],
                             "seed": [0, 1, 0, 1, None], "macro_f1": [0.84, 0.86, 0.78, 0.80, 0.90]})
    table = mean_std_table(per_seed)
    means = per_seed.groupby("model").mean(numeric_only=True)
    assert gap_recovery(means) == pytest.approx((0.85 - 0.79) / (0.90 - 0.79))
    assert table.loc["kd_student", "macro_f1"] == "0.850 ± 0.014"  # sample std over seeds
    assert table.loc["teacher", "macro_f1"] == "0.900 ± 0.000"     # one row: no spread, not NaN
    same = means.copy()
    same.loc["teacher", "macro_f1"] = same.loc["hard_only_student", "macro_f1"]
    assert np.isnan(gap_recovery(same))  # no gap: nothing to recover


def test_teacher_agreement_by_hand():
    score, p_teacher = [0.9, 0.2, 0.6, 0.4], [0.8, 0.3, 0.4, 0.45]
    got = teacher_agreement(score, p_teacher)
    assert got["agrees_with_teacher"] == 0.75  # labels 1, 0, 1, 0 against the teacher's 1, 0, 0, 0
    # deviations from the means 0.525 and 0.4875, summed products and squares written out
    assert got["corr_with_teacher"] == pytest.approx(0.17625 / math.sqrt(0.2675 * 0.141875), rel=1e-12)
    # a blind estimator: score -SNR, noisy at or below 10 dB, so its threshold is -10
    snr = np.array([3.0, 30.0, 10.0, 8.0])  # noisy, clean, noisy (at the threshold), noisy
    assert teacher_agreement(-snr, p_teacher, threshold=-10.0)["agrees_with_teacher"] == 0.5
    assert np.isnan(teacher_agreement([0.7] * 4, p_teacher)["corr_with_teacher"])  # a constant score
    with pytest.raises(ValueError, match="equal, non-empty"):
        teacher_agreement([0.1, 0.2], p_teacher)


def test_snr_band_auc_by_hand():
    """Each band's noisy clips against all clean ones; AUC = share of (noisy, clean) pairs ranked right."""
    ids = list("abcdefgh")
    snr = [2.0, 4.0, 10.0, 20.0, None, None, None, 30.0]
    truth = pd.DataFrame({"clip_id": ids, "snr_db": snr}).iloc[::-1]  # order of truth.csv does not matter
    score = [0.9, 0.3, 0.5, 0.2, 0.1, 0.4, 0.35, 0.05]  # the clean clips score 0.1, 0.4, 0.35
    table = snr_band_auc({"m": score, "flipped": [-x for x in score]}, ids, truth, edges=(5, 15, 25, 27))
    want = {"<=5dB": 4 / 6, "5-15dB": 1.0, "15-25dB": 1 / 3, "25-27dB": np.nan, ">27dB": 0.0}
    assert list(table.columns) == list(want)
    np.testing.assert_allclose(table.loc["m"].to_numpy(), list(want.values()))
    np.testing.assert_allclose(table.loc["flipped"].dropna().to_numpy(), [2 / 6, 0.0, 2 / 3, 1.0])
    assert table.attrs["n_noisy"] == {"<=5dB": 2, "5-15dB": 1, "15-25dB": 1, "25-27dB": 0, ">27dB": 1}
    assert table.attrs["n_clean"] == 3
    with pytest.raises(ValueError, match="no snr_db"):
        snr_band_auc({"m": score}, ids, truth.drop(columns="snr_db"))
    with pytest.raises(ValueError, match="m: 2 scores for 8 clips"):
        snr_band_auc({"m": score[:2]}, ids, truth)


def _macs_per_second_of_audio(net):
    """Independent of `macs_per_second`: torch's FLOP counter (2 per multiply-accumulate) on one segment of the
    eval-mode model, times the segments a long recording has per second (one per hop)."""
    a = net.audio
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net.eval().segment_forward(torch.zeros(1, a.n_mels, a.n_frames))
    return counter.get_total_flops() / 2 * a.sample_rate / a.hop_samples


class _FakeClock:
    """Stands in for time.perf_counter; only `advance` moves it."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


def test_speed_table_units_on_a_fake_clock(monkeypatch):
    """x real time = seconds of audio / seconds per pass, each pass really running the model on every waveform."""
    torch.manual_seed(0)
    net = build_model("student")
    trained_parameters = sum(p.numel() for p in net.parameters())
    model = WaveformClassifier(net.audio, net).fuse()  # as load_classifier returns it
    clock, calls, segments = _FakeClock(), [], []
    monkeypatch.setattr(time, "perf_counter", clock)

    def forward_takes_time(module, args):  # 1/16 s per waveform on the fake clock: a pass of 10 takes 0.625 s
        calls.append(tuple(args[0].shape))
        clock.advance(args[0].shape[0] / 16)

    model.register_forward_pre_hook(forward_takes_time)
    net.head.register_forward_hook(  # (not in the copy that macs_per_second counts on)
        lambda module, args, out: segments.append(args[0].shape[0]) if module is net.head else None)
    waves = 0.1 * torch.randn(10, 2 * SR, generator=torch.Generator().manual_seed(0))  # 20 s of audio
    table = speed_table({"student": model}, waves, SR)
    assert list(table.index) == ["student"]
    assert table.loc["student", "x real time"] == 20.0 / 0.625  # exact: the fake clock only moves in forward
    # a pass is longer than min_time (0.25 s), so one pass per round: the warm-up + 5 rounds, batches of 8
    assert calls == [(8, 2 * SR), (2, 2 * SR)] * 6
    per_wave = n_segments(2 * SR, net.audio)
    assert segments == [8 * per_wave, 2 * per_wave] * 6  # every segment of every waveform through the head
    assert table.loc["student", "parameters"] == trained_parameters  # BatchNorm's, folded away, still count
    assert table.loc["student", "M MACs / s audio"] == pytest.approx(_macs_per_second_of_audio(net) / 1e6, rel=1e-9)


class _Ticker(torch.nn.Module):
    """Moves a fake clock by the next of `seconds` per call (the last one repeating) and counts its calls."""

    def __init__(self, clock, seconds):
        super().__init__()
        self.clock, self.seconds, self.calls = clock, list(seconds), 0

    def forward(self, x):
        self.clock.advance(self.seconds[min(self.calls, len(self.seconds) - 1)])
        self.calls += 1
        return x


def test_pass_times_on_a_fake_clock_rounds_and_repeated_short_passes(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    waves = torch.zeros(4, 1000)  # 4 s at 1 kHz, 2 batches of 2: a pass is 2 calls
    # fast: 1/64 s a call, a 1/32 s pass: run 8 times back to back (min_time 0.25 s) and averaged.
    # slow: a 0.5 s warm-up pass, then rounds of 0.5, 2.5 (under load) and 1.0 s: the median round is 1.0 s
    fast = _Ticker(clock, [1 / 64])
    slow = _Ticker(clock, [0.25] * 2 + [0.25] * 2 + [1.25] * 2 + [0.5] * 2)
    times = pass_times({"fast": fast, "slow": slow}, waves, batch_size=2, repeats=3, min_time=0.25)
    assert times == {"fast": [1 / 32] * 3, "slow": [0.5, 2.5, 1.0]}  # exact: seconds per pass, one per round
    assert fast.calls == 2 * (1 + 3 * 8) and slow.calls == 2 * (1 + 3)


def test_speed_table_ratio_is_the_median_of_per_round_ratios(monkeypatch):
    from mark2_lib import timing

    nets = {"student": build_model("student"), "teacher": build_model("teacher")}
    models = {k: WaveformClassifier(n.audio, n).eval() for k, n in nets.items()}
    # round 2 ran under load for both: its ratio (4) is the middle one; medians alone would say 10 / 2 = 5
    times = {"student": [1.0, 3.0, 2.0], "teacher": [2.0, 12.0, 10.0]}
    monkeypatch.setattr(timing, "pass_times", lambda models, waves: {k: times[k] for k in models})
    table = speed_table(models, torch.zeros(2, 4 * SR), SR)
    assert table.loc["student", "x faster than teacher"] == 4.0 and table.loc["teacher", "x faster than teacher"] == 1.0
    assert table.loc["student", "x real time"] == pytest.approx(8 / 2.0) and table.loc["teacher", "x real time"] == pytest.approx(8 / 10.0)
    assert "x faster than teacher" not in speed_table({"student": models["student"]}, torch.zeros(2, 4 * SR), SR)
    for name, net in nets.items():  # each model's own MACs per second of audio (the teacher's front end differs)
        assert table.loc[name, "M MACs / s audio"] == pytest.approx(_macs_per_second_of_audio(net) / 1e6, rel=1e-9)
        assert table.loc[name, "parameters"] == sum(p.numel() for p in net.parameters())


class _Sleeper(torch.nn.Module):
    """Takes `seconds` per call and logs which model ran, so timing and turn order can be checked."""

    def __init__(self, name, seconds, log):
        super().__init__()
        self.name, self.seconds, self.log = name, seconds, log

    def forward(self, x):
        import time
        time.sleep(self.seconds)
        self.log.append(self.name)
        return x


def test_pass_times_take_turns_and_repeat_short_passes():
    log = []
    models = {"fast": _Sleeper("fast", 0.002, log), "slow": _Sleeper("slow", 0.06, log)}
    waves = torch.zeros(4, 1000)  # 2 batches of 2: a pass is 2 calls
    times = pass_times(models, waves, batch_size=2, repeats=3, min_time=0.1)
    assert [len(t) for t in times.values()] == [3, 3]  # one time per round
    assert float(np.median(times["slow"])) == pytest.approx(0.12, rel=0.3)
    assert float(np.median(times["fast"])) == pytest.approx(0.004, rel=0.5)
    rounds = log[4:]  # after one warm-up pass each: fast passes back to back, then one slow pass, per round
    assert rounds.count("slow") == 3 * 2 and rounds.count("fast") >= 3 * 2 * 5
    assert [name for i, name in enumerate(rounds) if i == 0 or rounds[i - 1] != name] == ["fast", "slow"] * 3


def _ece_reference(y, p, n_bins=15):
    """Textbook ECE: confidence of the predicted class, n equal-width bins over [0, 1], weighted |acc - conf|."""
    total = 0.0
    for lo, hi in zip(np.linspace(0, 1, n_bins + 1)[:-1], np.linspace(0, 1, n_bins + 1)[1:]):
        rows = [(int(pi >= 0.5) == yi, max(pi, 1 - pi)) for yi, pi in zip(y, p) if lo < max(pi, 1 - pi) <= hi]
        if rows:
            acc, conf = np.mean([r[0] for r in rows]), np.mean([r[1] for r in rows])
            total += len(rows) / len(y) * abs(acc - conf)
    return total


def test_ece_matches_the_textbook_definition():
    rng = np.random.default_rng(3)
    p = rng.random(500)
    y = (rng.random(500) < p ** 2).astype(int)  # over-confident on purpose
    assert expected_calibration_error(y, p) == pytest.approx(_ece_reference(y, p), abs=1e-12)


def test_ece_floor_shrinks_with_more_clips_and_is_zero_for_certain_labels():
    p = np.random.default_rng(0).random(1200)
    small, _ = ece_floor(p[:300])
    large, spread = ece_floor(p)
    assert large < small and spread > 0
    assert ece_floor(np.ones(50)) == (0.0, 0.0) and ece_floor(np.zeros(50)) == (0.0, 0.0)
    with pytest.raises(ValueError, match="probabilities"):
        ece_floor([0.5, 1.5])


@pytest.mark.parametrize("q", [0.5, 0.7, 0.9])
def test_ece_floor_of_one_probability_is_the_binomial_mean_deviation(q):
    """Every clip at P(noise) = q >= 0.5: one bin, confidence q, accuracy K / n with K ~ Binomial(n, q), so a
    calibrated model's ECE is |K / n - q|; its mean and std over K are sums over the binomial distribution."""
    n = 40
    pmf = np.array([math.comb(n, k) * q ** k * (1 - q) ** (n - k) for k in range(n + 1)])
    dev = np.abs(np.arange(n + 1) / n - q)
    mean, std = pmf @ dev, math.sqrt(pmf @ dev ** 2 - (pmf @ dev) ** 2)
    floor, spread = ece_floor(np.full(n, q))  # 200 draws: the mean within a few standard errors
    assert floor == pytest.approx(mean, abs=4 * std / math.sqrt(200))
    assert spread == pytest.approx(std, rel=0.25)


def test_ece_floor_is_the_mean_ece_of_labels_drawn_from_p():
    """A Monte Carlo estimate of its own (other draws, the textbook ECE) agrees with ece_floor on varied p."""
    p = np.random.default_rng(1).random(60)
    rng = np.random.default_rng(12345)
    eces = [_ece_reference((rng.random(len(p)) < p).astype(int), p) for _ in range(400)]
    floor, spread = ece_floor(p)
    assert floor == pytest.approx(np.mean(eces), abs=4 * np.std(eces) * math.sqrt(1 / 200 + 1 / 400))
    assert spread == pytest.approx(np.std(eces), rel=0.25)
    assert ece_floor(p) == (floor, spread)  # seeded: the same numbers on every call


def test_breakdown_by_snr_band_is_in_snr_order_with_correct_accuracies():
    snr = [22.0, -3.0, 7.5, np.nan, 7.0, 12.0]
    ids = [f"c{i}" for i in range(len(snr))]
    manifest = Manifest(Path("."), pd.DataFrame({"clip_id": ids, "label": [1, 1, 0, 0, 1, 0]}))
    truth = pd.DataFrame({"clip_id": ids[::-1], "snr_db": snr[::-1]})  # row order of truth.csv does not matter
    p = np.array([0.9, 0.2, 0.1, 0.4, 0.3, 0.6])  # right, wrong, right, right, wrong, wrong
    table = breakdown({"m": p}, manifest, truth, "snr_band")
    assert list(table.index) == ["(-inf, 0.0]", "(5.0, 10.0]", "(10.0, 15.0]", "(20.0, 25.0]", "no noise"]
    assert table["n"].tolist() == [1, 2, 1, 1, 1]
    assert table["m"].tolist() == [0.0, 0.5, 0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="no column 'room'"):
        breakdown({"m": p}, manifest, truth, "room")


def test_speed_audio_caps_length_and_total():
    clips = [np.zeros(2 * SR) for _ in range(400)]  # 800 s
    assert speed_audio(clips, SR).shape == (60, 10 * SR)  # 10 s recordings, 10 minutes at most
    short = speed_audio(clips[:3], SR)  # 6 s of audio: one 6 s recording rather than an error
    assert short.shape == (1, 6 * SR)
    with pytest.raises(ValueError, match="no audio"):
        speed_audio([np.zeros(0)], SR)


def test_predict_features_scores_an_unfused_model_through_a_fused_copy():
    """A model in training is scored as deployment would (BatchNorm folded) and left as it was."""
    from mark2_lib.config import AudioConfig, ModelConfig
    from mark2_lib.evaluate import predict_features

    audio_cfg = AudioConfig(n_mels=16)
    torch.manual_seed(0)
    net = build_model(ModelConfig(stem_channels=4, channels=(6,), head_hidden=5), audio_cfg).train()
    rng = np.random.default_rng(0)
    features = {f"c{i}": rng.normal(-40, 10, (n, 16, audio_cfg.n_frames)).astype(np.float32)
                for i, n in enumerate([3, 1, 2])}
    manifest = Manifest(Path("."), pd.DataFrame({"clip_id": list(features), "label": [0, 1, 1]}))
    pred = predict_features(net, manifest, features, batch_size=2)
    assert net.training and not net.encoder.fused
    assert [len(p) for p in pred["segment_p_noise"]] == [3, 1, 2] and pred["logits"].shape == (3, 2)
    with torch.no_grad():
        for i, x in enumerate(features.values()):
            clip, _ = net.eval()(torch.from_numpy(x)[None], torch.ones(1, len(x), dtype=torch.bool))
            np.testing.assert_allclose(pred["logits"][i], clip[0].numpy(), atol=1e-5)


def test_counting_a_model_does_not_move_the_global_rng():
    """Parameters and MACs are counted on a freshly built model: building it must not change what a
    seeded caller (a training run, a notebook) draws next."""
    from mark2_lib.timing import count_parameters, macs_per_second

    model = build_model("student").fuse()
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    count_parameters(model), macs_per_second(model)
    assert torch.equal(torch.rand(3), expected)


def test_teacher_band_report_scores_the_teacher_and_each_estimator_at_its_threshold():
    from mark2_lib.experiments import teacher_band_report

    ids = list("abcdef")

    class Split:
        clip_ids = ids

    class Data:  # what the report reads of a Dataset
        truth = pd.DataFrame({"clip_id": ids, "snr_db": [1, 10, 20, None, None, 30]})

        def split(self, name):
            assert name == "test"
            return Split()

        def teacher_p_noise(self, clip_ids):
            return np.array([0.9, 0.6, 0.3, 0.2, 0.1, 0.4])  # labels 1, 1, 0, 0, 0, 0

    per_seed = pd.DataFrame({"model": ["teacher"], "seed": [None], "run_dir": [None]})
    baselines = pd.DataFrame({"snr_threshold_db": [8.0, 12.0]}, index=["stnr_baseline", "wada_baseline"])
    clips = pd.DataFrame({"clip_id": ids[::-1], "stnr_db": [25, 40, 35, 18, 9, 2.0],   # f..a
                          "wada_db": [20, 30, np.nan, 15, 11, 3]})
    table, summary = teacher_band_report(per_seed, Data(), baselines, clips)
    rows = table.set_index("model")
    assert rows.loc["teacher", "agrees_with_teacher"] == 1.0 and rows.loc["teacher", "corr_with_teacher"] == 1.0
    assert rows.loc["stnr_baseline", "agrees_with_teacher"] == pytest.approx(5 / 6)  # noisy at <= 8 dB: a only
    assert rows.loc["wada_baseline", "agrees_with_teacher"] == 1.0                  # <= 12 dB: a and b
    stnr = np.array([2, 9, 18, 35, 40, 25.0])                                      # a..f
    assert rows.loc["stnr_baseline", "corr_with_teacher"] == pytest.approx(
        np.corrcoef(-stnr, [0.9, 0.6, 0.3, 0.2, 0.1, 0.4])[0, 1])
    # the teacher per band: a (0.9), b (0.6), c (0.3), f (0.4) each against the clean d (0.2) and e (0.1)
    assert rows.loc["teacher", ["auc<=5dB", "auc5-15dB", "auc15-25dB", "auc>25dB"]].tolist() == [1.0] * 4
    assert summary.loc["stnr_baseline", "agrees_with_teacher"] == "0.833 ± 0.000"


def test_speed_report_times_dnsmos_on_a_share_of_the_clips(tmp_path, monkeypatch):
    import json

    import soundfile as sf

    from mark2_lib import dnsmos
    from mark2_lib.evaluate import speed_report

    torch.manual_seed(0)
    net = build_model("student")
    (tmp_path / "config.json").write_text(json.dumps({"audio": net.audio.to_dict(), "model": net.config.to_dict()}))
    torch.save(net.encoder.state_dict(), tmp_path / "encoder.pt")
    torch.save(net.head.state_dict(), tmp_path / "head.pt")
    paths = []
    for i in range(12):
        paths.append(tmp_path / f"c{i}.wav")
        sf.write(str(paths[-1]), np.random.default_rng(i).uniform(-0.3, 0.3, SR).astype(np.float32), SR)
    seen = []
    monkeypatch.setattr(dnsmos, "realtime_factor", lambda waves: seen.append(len(waves)) or 5.0)
    table, line = speed_report(tmp_path, paths, SR, teacher="dnsmos", dnsmos_clips=4)
    assert seen == [4] and table.loc["teacher", "x real time"] == 5.0
    assert line.startswith(f"the student is {table.loc['student', 'x real time'] / 5.0:.1f}x faster than the DNSMOS")
