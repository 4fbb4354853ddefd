"""DistillationLoss against a plain reference written from the formulas."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mark2_lib.losses import DistillationLoss, temper

EPS = 1e-6


# ---------------------------------------------------------------- reference

def ref_temper(p, T, eps=EPS):
    """p^(1/T), renormalised: the same as softmax(log p / T), written out by hand."""
    q = p.clamp_min(eps) ** (1.0 / T)
    return q / q.sum(dim=1, keepdim=True)


def ref_log_softmax(z):
    m = z.max(dim=1, keepdim=True).values
    return z - m - torch.log(torch.exp(z - m).sum(dim=1, keepdim=True))


def ref_soft(logits, p, T, eps=EPS):
    """T^2 * mean over rows of sum_c q_c (log q_c - log s_c)."""
    if logits.shape[0] == 0:
        return torch.zeros((), dtype=logits.dtype)
    q = ref_temper(p, T, eps)
    log_s = ref_log_softmax(logits / T)
    return T * T * (q * (torch.log(q) - log_s)).sum(dim=1).mean()


def ref_hard(logits, y, w=None):
    nll = -ref_log_softmax(logits).gather(1, y[:, None])[:, 0]
    if w is None:
        return nll.mean()
    wy = w[y]
    return (wy * nll).sum() / wy.sum()


def ref_total(logits, p, y, alpha, T, w=None):
    return alpha * ref_soft(logits, p, T) + (1 - alpha) * ref_hard(logits, y, w)


def make_batch(n, c=2, seed=0, dtype=torch.float64, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=dtype) * scale
    p = torch.softmax(torch.randn(n, c, generator=g, dtype=dtype) * scale, dim=1)
    y = torch.randint(0, c, (n,), generator=g)
    return logits, p, y


# ---------------------------------------------------------------- matches reference

@pytest.mark.parametrize("n", [1, 7, 64])
@pytest.mark.parametrize("T", [0.5, 1.0, 2.0, 4.0, 8.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.7, 1.0])
def test_matches_reference(n, T, alpha):
    logits, p, y = make_batch(n, seed=n)
    loss = DistillationLoss(alpha=alpha, temperature=T)
    torch.testing.assert_close(loss(logits, p, y), ref_total(logits, p, y, alpha, T), rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("T", [0.5, 4.0])
def test_matches_reference_float32(T):
    logits, p, y = make_batch(64, seed=3)
    want = ref_total(logits, p, y, 0.7, T)
    got = DistillationLoss(temperature=T)(logits.float(), p.float(), y)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 32), c=st.integers(2, 5), seed=st.integers(0, 2**31 - 1),
       alpha=st.floats(0, 1), T=st.floats(0.25, 16))
def test_matches_reference_property(n, c, seed, alpha, T):
    logits, p, y = make_batch(n, c, seed=seed)
    parts = DistillationLoss(alpha=alpha, temperature=T)(logits, p, y, return_parts=True)
    torch.testing.assert_close(parts["soft"], ref_soft(logits, p, T), rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(parts["hard"], ref_hard(logits, y), rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(parts["total"], ref_total(logits, p, y, alpha, T), rtol=1e-5, atol=1e-10)


def test_gradient_matches_reference():
    logits, p, y = make_batch(16, c=3, seed=5)
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    DistillationLoss(alpha=0.6, temperature=3.0)(a, p, y).backward()
    ref_total(b, p, y, 0.6, 3.0).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-10)


def test_defaults_follow_readme():
    loss = DistillationLoss()
    assert loss.alpha == 0.7 and loss.temperature == 4.0 and loss.class_weights is None


# ---------------------------------------------------------------- parts and alpha

def test_alpha_endpoints_are_pure_terms():
    logits, p, y = make_batch(7, seed=1)
    torch.testing.assert_close(DistillationLoss(alpha=1.0)(logits, p, y), ref_soft(logits, p, 4.0))
    torch.testing.assert_close(DistillationLoss(alpha=0.0)(logits, p, y), ref_hard(logits, y))


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.7, 1.0])
def test_return_parts_consistent(alpha):
    logits, p, y = make_batch(9, seed=2)
    loss = DistillationLoss(alpha=alpha, temperature=2.0)
    parts = loss(logits, p, y, return_parts=True)
    assert set(parts) == {"total", "soft", "hard"}
    assert all(torch.is_tensor(v) and v.ndim == 0 for v in parts.values())
    torch.testing.assert_close(parts["total"], alpha * parts["soft"] + (1 - alpha) * parts["hard"])
    torch.testing.assert_close(parts["total"], loss(logits, p, y))


# ---------------------------------------------------------------- temperature

def test_temper_matches_reference_and_limits():
    _, p, _ = make_batch(10, c=4, seed=4)
    for T in (0.5, 1.0, 2.0, 8.0):
        torch.testing.assert_close(temper(p, T), ref_temper(p, T))
    torch.testing.assert_close(temper(p, 1.0), p, rtol=1e-5, atol=1e-6)
    flat = temper(p, 1e4)
    torch.testing.assert_close(flat, torch.full_like(p, 0.25), rtol=0, atol=1e-3)
    # softening never sharpens: entropy grows with T
    ent = lambda q: -(q * q.log()).sum(1)
    assert (ent(temper(p, 4.0)) >= ent(temper(p, 1.0)) - 1e-12).all()
    with pytest.raises(ValueError, match="temperature"):
        temper(p, 0.0)


def test_temper_is_not_dividing_probabilities():
    p = torch.tensor([[0.9, 0.1]], dtype=torch.float64)
    # p / T would not be a distribution; p^(1/T) renormalised is
    q = temper(p, 2.0)
    torch.testing.assert_close(q.sum(1), torch.ones(1, dtype=torch.float64))
    torch.testing.assert_close(q, torch.tensor([[0.75, 0.25]], dtype=torch.float64))


def _soft_grad(logits, p, T):
    z = logits.clone().requires_grad_()
    DistillationLoss(alpha=1.0, temperature=T)(z, p, torch.zeros(len(z), dtype=torch.long)).backward()
    return z.grad


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 8.0, 16.0])
def test_soft_gradient_is_t_times_softmax_difference(T):
    """d/dz [T^2 KL(q_T || softmax(z/T))] = T (softmax(z/T) - q_T) / N, written out (no autograd)."""
    logits, p, _ = make_batch(32, c=3, seed=11, scale=2.0)
    want = T * (torch.softmax(logits / T, dim=1) - ref_temper(p, T)) / len(logits)
    torch.testing.assert_close(_soft_grad(logits, p, T), want, rtol=1e-9, atol=1e-15)


def test_t_squared_keeps_soft_gradient_scale():
    """Hinton et al. 2015: with the T^2 factor the soft gradient tends to (z - log p) / (N C), centred
    per row, as T grows, so its size no longer depends on T (without it, or with T, it shrinks as 1/T^2 or 1/T)."""
    logits, p, _ = make_batch(32, c=3, seed=11, scale=2.0)
    n, c = logits.shape
    centred = lambda x: x - x.mean(dim=1, keepdim=True)
    limit = (centred(logits) - centred(torch.log(p))) / (n * c)
    ratio = {T: (_soft_grad(logits, p, T).norm() / limit.norm()).item() for T in (4.0, 8.0, 16.0, 32.0)}
    assert 0.9 < ratio[4.0] < ratio[8.0] < ratio[16.0] < ratio[32.0] <= 1.0, ratio  # approaches the limit
    assert ratio[16.0] > 0.99, ratio  # T instead of T^2 would give ~1/16 here
    for T, tol in ((16.0, 0.07), (32.0, 0.035)):  # the whole gradient converges, not only its size (error ~ 1/T)
        assert (_soft_grad(logits, p, T) - limit).norm() < tol * limit.norm()


# ---------------------------------------------------------------- masking

def test_mask_ignores_masked_out_rows_even_garbage():
    logits, p, y = make_batch(12, seed=6)
    mask = torch.tensor([True, False] * 6)
    garbage = p.clone()
    garbage[~mask] = torch.tensor([float("nan"), -5.0], dtype=p.dtype)
    loss = DistillationLoss(alpha=0.7, temperature=2.0)
    a = loss(logits, p, y, soft_mask=mask, return_parts=True)
    b = loss(logits, garbage, y, soft_mask=mask, return_parts=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    torch.testing.assert_close(a["soft"], ref_soft(logits[mask], p[mask], 2.0))
    torch.testing.assert_close(a["hard"], ref_hard(logits, y))  # hard uses every row without a hard_mask
    z = logits.clone().requires_grad_()
    loss(z, garbage, y, soft_mask=mask).backward()
    assert torch.isfinite(z.grad).all()


def test_all_true_mask_equals_no_mask():
    logits, p, y = make_batch(5, seed=7)
    loss = DistillationLoss()
    torch.testing.assert_close(loss(logits, p, y, soft_mask=torch.ones(5, dtype=torch.bool)), loss(logits, p, y))


@pytest.mark.parametrize("alpha", [0.7, 1.0])
def test_all_masked_gives_zero_soft(alpha):
    logits, p, y = make_batch(6, seed=8)
    p[:] = float("nan")
    z = logits.clone().requires_grad_()
    parts = DistillationLoss(alpha=alpha)(z, p, y, soft_mask=torch.zeros(6, dtype=torch.bool), return_parts=True)
    assert parts["soft"].item() == 0.0
    torch.testing.assert_close(parts["total"], (1 - alpha) * ref_hard(logits, y))
    parts["total"].backward()  # still attached to the graph, even with alpha = 1
    assert torch.isfinite(z.grad).all()


# ---------------------------------------------------------------- hard mask (clips without a hard label)

def with_garbage(y, hard_mask, values=(-1, 99)):
    """`y` with its masked-out rows overwritten by labels that are not classes."""
    out = y.clone()
    out[~hard_mask] = torch.tensor(values)[torch.arange(int((~hard_mask).sum())) % len(values)]
    return out


@pytest.mark.parametrize("alpha,T", [(0.0, 4.0), (0.7, 2.0), (0.3, 1.0)])
@pytest.mark.parametrize("weighted", [False, True])
def test_hard_mask_matches_reference_on_the_labelled_rows(alpha, T, weighted):
    logits, p, y = make_batch(10, seed=30)
    hard_mask = torch.tensor([True, False, True, True, False, False, True, False, True, True])
    w = torch.tensor([0.4, 2.5], dtype=torch.float64) if weighted else None
    parts = DistillationLoss(alpha=alpha, temperature=T, class_weights=w)(
        logits, p, with_garbage(y, hard_mask), hard_mask=hard_mask, return_parts=True)
    want_hard = ref_hard(logits[hard_mask], y[hard_mask], w)   # the mean over the 6 labelled rows only
    torch.testing.assert_close(parts["hard"], want_hard)
    torch.testing.assert_close(parts["soft"], ref_soft(logits, p, T))  # soft still reads every row
    torch.testing.assert_close(parts["total"], alpha * ref_soft(logits, p, T) + (1 - alpha) * want_hard)
    if weighted:  # F.cross_entropy's weighted mean over the labelled rows: divided by their summed weights
        wy = w[y[hard_mask]]
        nll = -torch.log_softmax(logits[hard_mask], 1).gather(1, y[hard_mask, None])[:, 0]
        torch.testing.assert_close(parts["hard"], (wy * nll).sum() / wy.sum())


def test_hard_mask_garbage_labels_change_neither_loss_nor_gradient():
    logits, p, y = make_batch(8, seed=31)
    hard_mask = torch.tensor([True, False, False, True, True, False, True, True])
    soft_mask = torch.tensor([True, True, False, True, False, True, True, True])
    loss = DistillationLoss(alpha=0.6, temperature=3.0, class_weights=torch.tensor([1.0, 3.0]))
    results = []
    for targets in (y, with_garbage(y, hard_mask, (-1,)), with_garbage(y, hard_mask, (99, -7)),
                    with_garbage(y, hard_mask, (0,)), with_garbage(y, hard_mask, (1,))):
        z = logits.clone().requires_grad_()
        total = loss(z, p, targets, soft_mask=soft_mask, hard_mask=hard_mask)
        total.backward()
        results.append((total.detach(), z.grad))
    for total, grad in results[1:]:
        assert torch.equal(total, results[0][0]) and torch.equal(grad, results[0][1])


def test_hard_mask_masked_out_rows_get_only_the_soft_gradient():
    logits, p, y = make_batch(9, seed=32)
    hard_mask = torch.tensor([False, True, True, False, True, True, False, True, True])
    alpha, T = 0.7, 2.0
    z = logits.clone().requires_grad_()
    DistillationLoss(alpha=alpha, temperature=T)(z, p, with_garbage(y, hard_mask), hard_mask=hard_mask).backward()
    zr = logits.clone().requires_grad_()
    (alpha * ref_soft(zr, p, T) + (1 - alpha) * ref_hard(zr[hard_mask], y[hard_mask])).backward()
    torch.testing.assert_close(z.grad, zr.grad)
    zs = logits.clone().requires_grad_()
    (alpha * ref_soft(zs, p, T)).backward()  # the soft term alone
    torch.testing.assert_close(z.grad[~hard_mask], zs.grad[~hard_mask])
    assert not torch.allclose(z.grad[hard_mask], zs.grad[hard_mask])  # labelled rows also get the CE gradient


@pytest.mark.parametrize("alpha", [0.0, 0.7])
def test_hard_mask_all_masked_gives_a_graph_attached_zero(alpha):
    logits, p, y = make_batch(5, seed=33)
    z = logits.clone().requires_grad_()
    parts = DistillationLoss(alpha=alpha, temperature=2.0, class_weights=torch.tensor([1.0, 2.0]))(
        z, p, torch.full((5,), -1), hard_mask=torch.zeros(5, dtype=torch.bool), return_parts=True)
    assert parts["hard"].item() == 0.0 and parts["hard"].requires_grad
    torch.testing.assert_close(parts["total"], alpha * ref_soft(logits, p, 2.0))
    parts["total"].backward()  # works even with alpha = 0 (gradient 0)
    if alpha == 0.0:
        assert (z.grad == 0).all()
    else:
        zs = logits.clone().requires_grad_()
        (alpha * ref_soft(zs, p, 2.0)).backward()
        torch.testing.assert_close(z.grad, zs.grad)
    both = DistillationLoss(alpha=alpha)(logits, p, y, soft_mask=torch.zeros(5, dtype=torch.bool),
                                         hard_mask=torch.zeros(5, dtype=torch.bool))
    assert both.item() == 0.0


@pytest.mark.parametrize("weighted", [False, True])
def test_all_true_hard_mask_is_bit_identical_to_no_mask(weighted):
    logits, p, y = make_batch(13, seed=34, dtype=torch.float32)
    loss = DistillationLoss(alpha=0.4, temperature=3.0,
                            class_weights=torch.tensor([0.7, 1.9]) if weighted else None)
    grads = []
    for mask in (None, torch.ones(13, dtype=torch.bool)):
        z = logits.clone().requires_grad_()
        parts = loss(z, p, y, hard_mask=mask, return_parts=True)
        parts["total"].backward()
        grads.append((parts, z.grad))
    for k in grads[0][0]:
        assert torch.equal(grads[0][0][k], grads[1][0][k]), k
    assert torch.equal(grads[0][1], grads[1][1])


def test_hard_mask_in_distill_clip_and_segment_modes():
    clip_logits, seg_logits, seg_mask, clip_p, clip_m, seg_p, seg_m, y = make_segment_batch(seed=35)
    hard_mask = torch.tensor([True, False, True, False, True])
    garbage = with_garbage(y, hard_mask)
    loss = DistillationLoss(alpha=0.5, temperature=2.0)  # validate=True: garbage labels would be refused if read
    want_hard = ref_hard(clip_logits[hard_mask], y[hard_mask])
    for mode in ("clip", "segment"):
        parts = loss.distill(clip_logits, garbage, clip_p, clip_m, mode, seg_logits, seg_mask, seg_p, seg_m,
                             hard_mask=hard_mask)
        torch.testing.assert_close(parts["hard"], want_hard, rtol=1e-5, atol=1e-10)
        plain = loss.distill(clip_logits, y, clip_p, clip_m, mode, seg_logits, seg_mask, seg_p, seg_m)
        assert torch.equal(parts["soft"], plain["soft"]) and int(parts["soft_rows"]) == int(plain["soft_rows"])
        torch.testing.assert_close(parts["total"], loss.combine(plain["soft"], want_hard))
        assert int(parts["hard_rows"]) == 3 and int(plain["hard_rows"]) == 5


def test_hard_mask_validation():
    logits, p, y = make_batch(4, seed=0, dtype=torch.float32)
    loss = DistillationLoss()
    for bad in (torch.ones(3, dtype=torch.bool), torch.ones(4), torch.ones(4, dtype=torch.long),
                torch.ones(4, 1, dtype=torch.bool), [True] * 4):
        with pytest.raises(ValueError, match="hard_mask"):
            loss(logits, p, y, hard_mask=bad)
    mask = torch.tensor([True, False, True, True])
    with pytest.raises(ValueError, match="hard_targets"):  # a labelled row's label is still checked
        loss(logits, p, torch.tensor([0, -1, 2, 1]), hard_mask=mask)
    assert torch.isfinite(loss(logits, p, torch.tensor([0, -1, 1, 1]), hard_mask=mask))


# ---------------------------------------------------------------- class weights

@pytest.mark.parametrize("c", [2, 4])
def test_class_weights_match_cross_entropy(c):
    logits, p, y = make_batch(20, c=c, seed=9)
    w = torch.linspace(0.5, 3.0, c, dtype=torch.float64)
    parts = DistillationLoss(class_weights=w)(logits, p, y, return_parts=True)
    torch.testing.assert_close(parts["hard"], F.cross_entropy(logits, y, weight=w))
    torch.testing.assert_close(parts["hard"], ref_hard(logits, y, w))
    torch.testing.assert_close(parts["soft"], ref_soft(logits, p, 4.0))  # soft is unweighted


def test_class_weights_move_with_module_and_stay_out_of_state_dict():
    loss = DistillationLoss(class_weights=torch.tensor([1.0, 2.0]))
    assert "class_weights" not in loss.state_dict()
    assert loss.double().class_weights.dtype == torch.float64


# ---------------------------------------------------------------- exact 0/1 probabilities

@pytest.mark.parametrize("T", [0.5, 1.0, 4.0, 8.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_hot_probabilities_are_finite(T, dtype):
    logits, _, y = make_batch(8, seed=10, dtype=dtype)
    p = F.one_hot(y, 2).to(dtype)
    z = logits.clone().requires_grad_()
    parts = DistillationLoss(temperature=T)(z, p, y, return_parts=True)
    assert all(torch.isfinite(v) for v in parts.values())
    parts["total"].backward()
    assert torch.isfinite(z.grad).all()
    torch.testing.assert_close(parts["soft"].double(), ref_soft(logits.double(), p.double(), T),
                               rtol=1e-4, atol=1e-5)


def test_half_precision_logits_are_upcast():
    logits, p, y = make_batch(8, seed=12, dtype=torch.float32)
    out = DistillationLoss()(logits.bfloat16(), p, y)
    assert out.dtype == torch.float32 and torch.isfinite(out)


# ---------------------------------------------------------------- rejected input

@pytest.mark.parametrize("kwargs,name", [
    (dict(alpha=-0.1), "alpha"),
    (dict(alpha=1.5), "alpha"),
    (dict(alpha=float("nan")), "alpha"),
    (dict(alpha="0.5"), "alpha"),
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-1.0), "temperature"),
    (dict(temperature=float("inf")), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(eps=0.0), "eps"),
    (dict(class_weights=torch.ones(2, 2)), "class_weights"),
    (dict(class_weights=torch.tensor([1.0, -1.0])), "class_weights"),
    (dict(class_weights=torch.tensor([1.0, float("nan")])), "class_weights"),
    (dict(class_weights=torch.zeros(2)), "class_weights"),
])
def test_rejects_bad_constructor_args(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DistillationLoss(**kwargs)


def _bad_calls():
    logits, p, y = make_batch(4, seed=0, dtype=torch.float32)
    mask = torch.ones(4, dtype=torch.bool)
    unnorm = p.clone(); unnorm[0] = torch.tensor([0.5, 0.6])
    neg = p.clone(); neg[1] = torch.tensor([1.2, -0.2])
    nan = p.clone(); nan[2, 0] = float("nan")
    inf = p.clone(); inf[3, 1] = float("inf")
    return [
        ((logits[0], p, y), {}, "student_logits"),                         # 1-D logits
        ((logits[None], p, y), {}, "student_logits"),                      # 3-D logits
        ((logits[:0], p[:0], y[:0]), {}, "student_logits"),                # empty batch
        ((logits[:, :1], p[:, :1], y), {}, "student_logits"),              # one class
        ((logits, p[:3], y), {}, "soft_targets"),
        ((logits, p[:, :1], y), {}, "soft_targets"),
        ((logits, torch.cat([p, p], 1), y), {}, "soft_targets"),
        ((logits, p, y[:3]), {}, "hard_targets"),
        ((logits, p, y[:, None]), {}, "hard_targets"),
        ((logits, p, y.float()), {}, "hard_targets"),
        ((logits, p, torch.tensor([0, 1, 2, 0])), {}, "hard_targets"),     # out of range
        ((logits, p, torch.tensor([0, -1, 1, 0])), {}, "hard_targets"),
        ((logits, p, y), dict(soft_mask=mask[:3]), "soft_mask"),
        ((logits, p, y), dict(soft_mask=mask.float()), "soft_mask"),
        ((logits, unnorm, y), {}, "soft_targets"),
        ((logits, logits, y), {}, "soft_targets"),                         # logits, not probs
        ((logits, neg, y), {}, "soft_targets"),
        ((logits, nan, y), {}, "soft_targets"),
        ((logits, inf, y), {}, "soft_targets"),
    ]


@pytest.mark.parametrize("args,kwargs,name", _bad_calls())
def test_rejects_bad_call_args(args, kwargs, name):
    with pytest.raises(ValueError, match=name):
        DistillationLoss()(*args, **kwargs)


def test_class_weights_length_must_match_classes():
    logits, p, y = make_batch(4, c=3, seed=0)
    with pytest.raises(ValueError, match="class_weights"):
        DistillationLoss(class_weights=torch.ones(2))(logits, p, y)


def test_sum_tolerance_is_1e_3():
    logits, _, y = make_batch(2, seed=0)
    ok = torch.tensor([[0.5, 0.5009], [0.2, 0.8]], dtype=torch.float64)
    bad = torch.tensor([[0.5, 0.5011], [0.2, 0.8]], dtype=torch.float64)
    assert math.isfinite(DistillationLoss()(logits, ok, y).item())
    with pytest.raises(ValueError, match="soft_targets"):
        DistillationLoss()(logits, bad, y)


# ---------------------------------------------------------------- the trainer's objective (distill)

def make_segment_batch(b=5, s=4, seed=20):
    """Clip and segment logits of b clips with 1..s real segments, teacher targets with some rows unlabelled."""
    g = torch.Generator().manual_seed(seed)
    n_real = torch.randint(1, s + 1, (b,), generator=g)
    seg_mask = torch.arange(s)[None] < n_real[:, None]
    seg_logits = torch.randn(b, s, 2, generator=g, dtype=torch.float64) * 2
    clip_logits = torch.randn(b, 2, generator=g, dtype=torch.float64) * 2
    seg_p = torch.softmax(torch.randn(b, s, 2, generator=g, dtype=torch.float64) * 2, dim=-1)
    clip_p = torch.softmax(torch.randn(b, 2, generator=g, dtype=torch.float64) * 2, dim=-1)
    seg_soft_mask = seg_mask & (torch.rand(b, s, generator=g) < 0.7)
    seg_soft_mask[0, 0] = True  # at least one labelled segment
    clip_soft_mask = torch.rand(b, generator=g) < 0.8
    clip_soft_mask[0] = True
    y = torch.randint(0, 2, (b,), generator=g)
    return clip_logits, seg_logits, seg_mask, clip_p, clip_soft_mask, seg_p, seg_soft_mask, y


@pytest.mark.parametrize("alpha,T", [(0.0, 4.0), (0.7, 4.0), (0.5, 2.0), (1.0, 1.0)])
def test_distill_segment_mode_matches_reference(alpha, T):
    """soft_target="segment": the KL term over every labelled real segment, the CE term per clip,
    total = alpha * soft + (1 - alpha) * hard."""
    clip_logits, seg_logits, seg_mask, clip_p, clip_m, seg_p, seg_m, y = make_segment_batch()
    parts = DistillationLoss(alpha=alpha, temperature=T).distill(
        clip_logits, y, clip_p, clip_m, "segment", seg_logits, seg_mask, seg_p, seg_m)
    rows = seg_m & seg_mask
    want_soft = ref_soft(seg_logits[rows], seg_p[rows], T)
    want_hard = ref_hard(clip_logits, y)
    torch.testing.assert_close(parts["soft"], want_soft, rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(parts["hard"], want_hard, rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(parts["total"], alpha * want_soft + (1 - alpha) * want_hard, rtol=1e-5, atol=1e-10)
    assert int(parts["soft_rows"]) == int(rows.sum())


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_distill_clip_mode_is_the_plain_loss_on_clip_logits(alpha):
    clip_logits, seg_logits, seg_mask, clip_p, clip_m, seg_p, seg_m, y = make_segment_batch(seed=21)
    loss = DistillationLoss(alpha=alpha, temperature=2.0)
    parts = loss.distill(clip_logits, y, clip_p, clip_m, "clip", seg_logits, seg_mask, seg_p, seg_m)
    plain = loss(clip_logits, clip_p, y, soft_mask=clip_m, return_parts=True)
    for k in plain:
        assert torch.equal(parts[k], plain[k]), k
    torch.testing.assert_close(parts["soft"], ref_soft(clip_logits[clip_m], clip_p[clip_m], 2.0), rtol=1e-5, atol=1e-10)
    assert int(parts["soft_rows"]) == int(clip_m.sum())
    with pytest.raises(ValueError, match="soft_target"):
        loss.distill(clip_logits, y, clip_p, clip_m, "frame")


def test_distill_keeps_float64_and_upcasts_bfloat16():
    clip_logits, seg_logits, seg_mask, clip_p, clip_m, seg_p, seg_m, y = make_segment_batch(seed=23)
    loss = DistillationLoss()
    assert loss.distill(clip_logits, y, clip_p, clip_m, "segment", seg_logits, seg_mask, seg_p,
                        seg_m)["total"].dtype == torch.float64
    assert loss.distill(clip_logits.bfloat16(), y, clip_p.float(), clip_m, "segment", seg_logits.bfloat16(),
                        seg_mask, seg_p.float(), seg_m)["total"].dtype == torch.float32


def test_distill_gradient_reaches_segment_and_clip_logits():
    clip_logits, seg_logits, seg_mask, clip_p, clip_m, seg_p, seg_m, y = make_segment_batch(seed=22)
    z, s = clip_logits.clone().requires_grad_(), seg_logits.clone().requires_grad_()
    DistillationLoss(alpha=0.6, temperature=3.0).distill(z, y, clip_p, clip_m, "segment", s, seg_mask, seg_p,
                                                          seg_m)["total"].backward()
    zr, sr = clip_logits.clone().requires_grad_(), seg_logits.clone().requires_grad_()
    rows = seg_m & seg_mask
    (0.6 * ref_soft(sr[rows], seg_p[rows], 3.0) + 0.4 * ref_hard(zr, y)).backward()
    torch.testing.assert_close(z.grad, zr.grad, rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(s.grad, sr.grad, rtol=1e-5, atol=1e-10)
    assert (s.grad[~rows] == 0).all()  # unlabelled and padded segments get no gradient


# ---------------------------------------------------------------- validation on and off

def test_validate_false_skips_the_checks_and_gives_the_same_numbers():
    logits, p, y = make_batch(8, seed=13, dtype=torch.float32)
    checked, unchecked = DistillationLoss(alpha=0.4, temperature=3.0), DistillationLoss(0.4, 3.0, validate=False)
    assert checked.validate and not unchecked.validate and "validate=False" in repr(unchecked)
    a, b = checked(logits, p, y, return_parts=True), unchecked(logits, p, y, return_parts=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    bad = p.clone()
    bad[0] = torch.tensor([0.5, 0.6])  # rows must sum to 1
    with pytest.raises(ValueError, match="soft_targets"):
        checked(logits, bad, y)
    with pytest.raises(ValueError, match="hard_targets"):
        checked(logits, p, y.float())
    assert torch.isfinite(unchecked(logits, bad, y))  # not checked: the caller vouches for its data
