"""The pure loss functions: divergences against a float64 reference, the mask → weights rule,
and the chunked head + backward against the plain computation."""

import math

import pytest
import torch

from learner.batch import trained_mask
from learner.divergence import (
    chunked_backward,
    sequence_weights,
    token_cross_entropy,
    token_divergence,
)


def reference(student_logits, teacher_logits, kind, alpha=0.5):
    """Straight from the definitions, in float64, with probabilities (no log-space tricks)."""
    ps = torch.softmax(student_logits.double(), -1)
    pt = torch.softmax(teacher_logits.double(), -1)

    def kl(p, q):
        return (p * (p.log() - q.log())).sum(-1)

    if kind == "forward":
        return kl(pt, ps)
    if kind == "reverse":
        return kl(ps, pt)
    m = (1 - alpha) * ps + alpha * pt
    return alpha * kl(pt, m) + (1 - alpha) * kl(ps, m)


@pytest.mark.parametrize("kind,alpha", [("forward", 0.5), ("reverse", 0.5), ("jsd", 0.5), ("jsd", 0.1), ("jsd", 0.9)])
def test_divergences_match_float64_reference(kind, alpha):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 7, 50, generator=g) * 3
    t = torch.randn(3, 7, 50, generator=g) * 3
    ref = reference(s, t, kind, alpha)
    got = token_divergence(s.double(), t.double(), kind, alpha)
    assert got.shape == (3, 7) and got.dtype == torch.float64
    assert (got - ref).abs().max() < 1e-6
    # float32 logits (what the model gives): within float32 resolution of the value
    got32 = token_divergence(s, t, kind, alpha)
    assert got32.dtype == torch.float32
    assert ((got32.double() - ref).abs() / ref.abs().clamp(min=1.0)).max() < 1e-6


def test_forward_kl_is_torch_kl_div_teacher_to_student():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 30, generator=g), torch.randn(4, 30, generator=g)
    sl, tl = s.log_softmax(-1), t.log_softmax(-1)
    paper = torch.nn.functional.kl_div(sl, tl, log_target=True, reduction="none").sum(-1)
    assert torch.allclose(token_divergence(s, t, "forward"), paper, atol=1e-7)


def test_jsd_endpoints_are_forward_and_reverse_kl():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(5, 40, generator=g), torch.randn(5, 40, generator=g)
    assert torch.equal(token_divergence(s, t, "jsd", 0.0), token_divergence(s, t, "forward"))
    assert torch.equal(token_divergence(s, t, "jsd", 1.0), token_divergence(s, t, "reverse"))


@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
def test_divergence_zero_for_equal_distributions(kind):
    x = torch.randn(2, 6, 20)
    assert token_divergence(x, x.clone(), kind).abs().max() < 1e-6
    assert token_divergence(x, x + 5.0, kind).abs().max() < 1e-5  # shift-invariant logits


def test_cross_entropy_is_minus_log_prob_of_target():
    logits = torch.randn(2, 5, 11)
    targets = torch.randint(0, 11, (2, 5))
    expected = -logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(token_cross_entropy(logits, targets), expected, atol=1e-6)


def test_sequence_weights_mean_per_sequence_then_batch():
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    values = torch.tensor([[1.0, 3.0, 100.0, 100.0], [1.0, 1.0, 1.0, 5.0], [9.0, 9.0, 9.0, 9.0]])
    w = sequence_weights(mask, n_sequences=3)
    assert math.isclose(float((w * values).sum()), (2.0 + 2.0 + 0.0) / 3, rel_tol=1e-6)


def test_sequence_weights_count_each_rows_first_trained_token_opening_times():
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]]).bool()
    w = sequence_weights(mask, n_sequences=4, opening=3.0)
    want = torch.tensor([[0, 3 / 5 / 4, 1 / 5 / 4, 1 / 5 / 4], [3 / 4 / 4, 1 / 4 / 4, 0, 0],
                         [0, 0, 0, 0], [0, 0, 1 / 4, 0]])
    torch.testing.assert_close(w, want)
    assert torch.equal(sequence_weights(mask, 4, opening=1.0), sequence_weights(mask, 4))


def test_trained_mask_counts_leading_tokens_per_row():
    real = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]]).bool()
    m = trained_mask(real, [3, 0])
    assert m.tolist() == [[False, False, False, True, True, False], [True, True, False, False, False, False]]


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_chunked_backward_equals_full_computation(chunk):
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 30, bias=False)
    head.requires_grad_(False)
    w_in = torch.randn(8, 8, requires_grad=True)
    x = torch.randn(2, 7, 8)
    teacher = torch.randn(2, 7, 30)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0]]).bool()
    weights = sequence_weights(mask, 2)

    full = (token_divergence(head(x @ w_in), teacher) * weights).sum()
    full.backward()
    g_full = w_in.grad.clone()
    w_in.grad = None

    got = chunked_backward(x @ w_in, head,
                           lambda logits, sl: (token_divergence(logits, teacher[:, sl]) * weights[:, sl]).sum(),
                           chunk)
    assert torch.allclose(got, full.detach(), atol=1e-6)
    assert torch.allclose(w_in.grad, g_full, atol=1e-6)


def test_masked_positions_do_not_change_loss_or_gradient():
    """Prompt positions, padding and the first 3 completion tokens carry no loss: perturbing
    student and teacher logits there changes neither the loss nor the gradient elsewhere."""
    torch.manual_seed(0)
    B, C, V = 2, 9, 25
    real = torch.tensor([[1] * 9, [1] * 6 + [0] * 3]).bool()  # row 1: 3 padding positions
    mask = trained_mask(real, [3, 3])
    weights = sequence_weights(mask, B)
    s = torch.randn(B, C, V)
    t = torch.randn(B, C, V)

    def run(s, t):
        x = s.clone().requires_grad_(True)
        loss = chunked_backward(x, torch.nn.Identity(),
                                lambda lg, sl: (token_divergence(lg, t[:, sl]) * weights[:, sl]).sum(), 4)
        return loss, x.grad

    loss, grad = run(s, t)
    s2, t2 = s.clone(), t.clone()
    s2[~mask] += 10 * torch.randn_like(s2[~mask])
    t2[~mask] += 10 * torch.randn_like(t2[~mask])
    loss2, grad2 = run(s2, t2)
    assert torch.equal(loss, loss2)
    assert torch.equal(grad[mask], grad2[mask])
    assert grad[~mask].abs().max() == 0
    # and a trained position does matter
    s3 = s.clone()
    s3[0, 3] += 1.0
    assert not torch.equal(run(s3, t)[0], loss)
