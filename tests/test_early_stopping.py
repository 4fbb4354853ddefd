"""EarlyStopping: known stop/best epochs, a Lightning-style reference, and resume."""
import io
import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mark2_lib.early_stopping import EarlyStopping

NAN, INF = float("nan"), float("inf")


def run(es, values):
    """Feed values until stop; returns the epoch index where step() returned True (or None)."""
    for v in values:
        if es.step(v):
            return es.epoch - 1
    return None


def reference(values, patience, min_delta, mode):
    """PyTorch Lightning's EarlyStopping loop, written out: (stop_epoch, best, best_epoch)."""
    better = (lambda a, b: a < b) if mode == "min" else (lambda a, b: a > b)
    delta = -abs(min_delta) if mode == "min" else abs(min_delta)
    best, best_epoch, wait = (INF if mode == "min" else -INF), None, 0
    for epoch, v in enumerate(values):
        if not math.isfinite(v):
            return epoch, (None if best_epoch is None else best), best_epoch
        if better(v - delta, best):
            best, best_epoch, wait = v, epoch, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch, best, best_epoch
    return None, best, best_epoch


# (id, values, patience, min_delta, mode, stop_epoch, best_epoch, best, reason fragment)
CASES = [
    ("keeps-improving", [5, 4, 3, 2, 1], 2, 0.0, "min", None, 4, 1.0, None),
    ("ties-are-not-improvement", [1.0, 1.0, 1.0, 0.5], 2, 0.0, "min", 2, 0, 1.0, "for 2 epochs"),
    ("improvement-resets-wait", [3, 2, 2.5, 2.1, 1.5, 1.6, 1.7, 1.8, 0.1], 3, 0.0, "min", 7, 4, 1.5,
     "(best 1.5 at epoch 5)"),
    # 0.75 and 0.25 gain exactly min_delta (exact in binary): no improvement, so best stays 1.0 then 0.5;
    # counting them (<=) would make 0.25 the best and never stop
    ("min-delta-boundary-is-not-improvement", [1.0, 0.75, 0.5, 0.25, 0.25], 2, 0.25, "min", 4, 2, 0.5,
     "by more than 0.25 for 2 epochs (best 0.5 at epoch 3)"),
    ("negative-min-delta-uses-abs", [1.0, 0.75, 0.5, 0.3, 0.3], 2, -0.25, "min", 4, 2, 0.5, "0.25"),
    ("patience-0-stops-on-tie", [1.0, 0.5, 0.5], 0, 0.0, "min", 2, 1, 0.5, "for 1 epoch "),
    ("patience-0-stops-on-worse", [1.0, 2.0], 0, 0.0, "min", 1, 0, 1.0, None),
    ("patience-0-keeps-going-while-improving", [3, 2, 1], 0, 0.0, "min", None, 2, 1.0, None),
    ("nan-stops-at-once", [1, 0.9, 0.8, NAN, 0.1], 10, 0.0, "min", 3, 2, 0.8,
     "monitored value val_loss is nan at epoch 4"),
    ("nan-first", [NAN, 1.0], 10, 0.0, "min", 0, None, None, "is nan at epoch 1"),
    ("inf-stops", [1.0, INF], 10, 0.0, "min", 1, 0, 1.0, "is inf at epoch 2"),
    ("minus-inf-stops-in-min-mode", [1.0, -INF], 10, 0.0, "min", 1, 0, 1.0, "is -inf"),
    ("max-mode", [0.5, 0.6, 0.6, 0.55, 0.7], 2, 0.0, "max", 3, 1, 0.6, None),
    ("max-mode-min-delta", [0.5, 0.75, 1.0, 1.5], 1, 0.25, "max", 1, 0, 0.5, None),
    ("max-mode-improving", [0.1, 0.2, 0.3], 1, 0.0, "max", None, 2, 0.3, None),
    ("max-mode-inf-stops", [0.5, INF], 3, 0.0, "max", 1, 0, 0.5, "is inf"),
    ("first-finite-value-improves-with-huge-delta", [1e30, 5.0], 1, 1e300, "min", 1, 0, 1e30, None),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("name,values,patience,min_delta,mode,stop,best_epoch,best,reason", CASES, ids=IDS)
def test_known_sequences(name, values, patience, min_delta, mode, stop, best_epoch, best, reason):
    es = EarlyStopping(patience=patience, min_delta=min_delta, mode=mode)
    assert run(es, values) == stop
    assert es.should_stop == (stop is not None)
    assert es.best_epoch == best_epoch
    assert es.best == best
    if stop is None:
        assert es.stop_reason is None and es.epoch == len(values)
    else:
        assert es.epoch == stop + 1
        assert reason is None or reason in es.stop_reason
    ref_stop, ref_best, ref_best_epoch = reference(values, patience, min_delta, mode)
    assert (ref_stop, ref_best_epoch) == (stop, best_epoch)


def test_stop_reason_message():
    values = [0.5] * 7 + [0.1234] + [0.2] * 10
    es = EarlyStopping(patience=10)
    assert run(es, values) == 17
    assert es.stop_reason == "val_loss did not improve by more than 0.0 for 10 epochs (best 0.1234 at epoch 8)"


def test_monitor_name_in_messages():
    es = EarlyStopping(patience=1, mode="max", monitor="val_f1")
    assert run(es, [0.5, 0.4]) == 1
    assert es.stop_reason.startswith("val_f1 did not improve")
    es = EarlyStopping(monitor="val_f1")
    es.step(NAN)
    assert es.stop_reason == "monitored value val_f1 is nan at epoch 1"


def test_wait_counts():
    es = EarlyStopping(patience=5)
    waits = []
    for v in [3, 3, 4, 2, 2.5, 1]:
        es.step(v)
        waits.append(es.wait)
    assert waits == [0, 1, 2, 0, 1, 0]


def test_stopped_is_sticky():
    es = EarlyStopping(patience=0)
    assert es.step(1.0) is False
    assert es.step(1.0) is True
    before = es.state_dict()
    assert es.step(0.0) is True  # no further change once stopped
    assert es.state_dict() == before


@pytest.mark.parametrize("value", [torch.tensor(0.5), torch.tensor([0.5]), 0.5, 1])
def test_accepts_numbers_and_scalar_tensors(value):
    es = EarlyStopping()
    es.step(value)
    assert es.best == 0.5 or es.best == 1.0
    assert type(es.best) is float


def test_rejects_non_scalar_value():
    with pytest.raises(ValueError, match="monitored value"):
        EarlyStopping().step(torch.tensor([0.5, 0.6]))


@pytest.mark.parametrize("kwargs,name", [
    (dict(patience=-1), "patience"),
    (dict(patience=1.5), "patience"),
    (dict(patience=True), "patience"),
    (dict(min_delta=NAN), "min_delta"),
    (dict(min_delta=INF), "min_delta"),
    (dict(min_delta="0.1"), "min_delta"),
    (dict(mode="minimum"), "mode"),
    (dict(monitor=""), "monitor"),
])
def test_rejects_bad_args(kwargs, name):
    with pytest.raises(ValueError, match=name):
        EarlyStopping(**kwargs)


# ---------------------------------------------------------------- reference, property-based

values_st = st.lists(
    st.one_of(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]),  # small set: plenty of ties
              st.floats(-10, 10, allow_nan=False),
              st.sampled_from([NAN, INF, -INF])),
    max_size=40)


@settings(max_examples=300, deadline=None)
@given(values=values_st, patience=st.integers(0, 6), min_delta=st.sampled_from([0.0, 0.25, -0.25, 1e-3]),
       mode=st.sampled_from(["min", "max"]))
@example(values=[0.25, -3.58e-179], patience=0, min_delta=0.25, mode="min")  # rounding at the delta edge
def test_matches_lightning_reference(values, patience, min_delta, mode):
    es = EarlyStopping(patience=patience, min_delta=min_delta, mode=mode)
    stop = run(es, values)
    ref_stop, ref_best, ref_best_epoch = reference(values, patience, min_delta, mode)
    assert stop == ref_stop
    assert es.best_epoch == ref_best_epoch
    if ref_best_epoch is not None:
        assert es.best == ref_best


# ---------------------------------------------------------------- resume

def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _resume_matches(values, patience, min_delta, mode, split):
    whole = EarlyStopping(patience=patience, min_delta=min_delta, mode=mode, monitor="val_loss")
    want = run(whole, values)

    es = EarlyStopping(patience=patience, min_delta=min_delta, mode=mode, monitor="val_loss")
    got = run(es, values[:split])
    if got is None:
        resumed = EarlyStopping()  # defaults: the settings come from the state dict
        resumed.load_state_dict(_roundtrip(es.state_dict()))
        got = run(resumed, values[split:])  # epoch indices stay absolute: the counter is restored
        es = resumed
    assert got == want
    assert es.state_dict() == whole.state_dict()  # best is never NaN, so == is exact


@pytest.mark.parametrize("name,values,patience,min_delta,mode,stop,best_epoch,best,reason", CASES, ids=IDS)
def test_resume_from_state_dict_matches_uninterrupted(name, values, patience, min_delta, mode, stop,
                                                      best_epoch, best, reason):
    for split in range(len(values) + 1):
        _resume_matches(values, patience, min_delta, mode, split)


@settings(max_examples=100, deadline=None)
@given(values=values_st, patience=st.integers(0, 6), min_delta=st.sampled_from([0.0, 0.25]),
       mode=st.sampled_from(["min", "max"]), data=st.data())
def test_resume_property(values, patience, min_delta, mode, data):
    split = data.draw(st.integers(0, len(values)))
    _resume_matches(values, patience, min_delta, mode, split)


def test_state_dict_is_plain_python():
    es = EarlyStopping(patience=3, min_delta=0.1, mode="max", monitor="val_acc")
    for v in [0.5, 0.7, 0.6]:
        es.step(torch.tensor(v))
    state = es.state_dict()
    assert all(v is None or type(v) in (int, float, str, bool) for v in state.values())
    assert _roundtrip(state) == state
    fresh = EarlyStopping()
    fresh.load_state_dict(state)
    assert (fresh.mode, fresh.monitor, fresh.patience, fresh.min_delta) == ("max", "val_acc", 3, 0.1)
    assert (fresh.best, fresh.best_epoch, fresh.wait, fresh.epoch) == (es.best, 1, 1, 3)


def test_load_state_dict_rejects_incomplete_or_bad_state():
    state = EarlyStopping().state_dict()
    with pytest.raises(ValueError, match="missing"):
        EarlyStopping().load_state_dict({k: v for k, v in state.items() if k != "wait"})
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping().load_state_dict({**state, "mode": "sideways"})
