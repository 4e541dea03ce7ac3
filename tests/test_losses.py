"""The contrastive loss against a naive loop, simulated multi-rank gathering, same-id masking."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from notellm2_pl.model.losses import contrastive_loss, micl_loss, pair_labels


def _naive(emb: torch.Tensor, scale: float, ids: list[int] | None = None) -> torch.Tensor:
    """Loop over anchors: CE of the partner against every other note (docs/method.md#contrastive-loss), one rank.

    With ids, other copies of the anchor's note and of its positive's note are left out.
    """
    n = emb.shape[0]
    half = n // 2
    total = 0.0
    for i in range(n):
        pos = (i + half) % n
        logits = []
        for j in range(n):
            if j == i or (ids is not None and j != pos and ids[j] in (ids[i], ids[pos])):
                continue
            logits.append((float(emb[i] @ emb[j]) * scale, j == pos))
        denom = math.log(sum(math.exp(v) for v, _ in logits))
        total += denom - next(v for v, p in logits if p)
    return torch.tensor(total / n)


def test_loss_matches_naive_loop():
    torch.manual_seed(0)
    emb = F.normalize(torch.randn(8, 5), dim=-1)
    scale = torch.tensor(3.0).exp()
    got = contrastive_loss(emb, emb, 0, scale)
    torch.testing.assert_close(got, _naive(emb, float(scale)), atol=1e-5, rtol=1e-5)


def test_labels_layout():
    assert pair_labels(6, offset=12).tolist() == [15, 16, 17, 12, 13, 14]


def test_same_id_masking_matches_naive_and_changes_loss():
    torch.manual_seed(1)
    emb = F.normalize(torch.randn(8, 5), dim=-1)
    ids = [0, 1, 2, 3, 10, 11, 12, 0]  # note 0 appears again as the target of pair 3
    scale = torch.tensor(2.0)
    got = contrastive_loss(emb, emb, 0, scale, torch.tensor(ids), torch.tensor(ids))
    torch.testing.assert_close(got, _naive(emb, 2.0, ids), atol=1e-5, rtol=1e-5)
    assert not torch.isclose(got, contrastive_loss(emb, emb, 0, scale))


def test_two_simulated_ranks_equal_one_process_with_doubled_batch():
    """Rank r computes its local rows against the gathered batch; DDP averages: equal to one big process."""
    torch.manual_seed(2)
    b = 6  # notes per rank = 3 pairs
    r0, r1 = torch.randn(b, 4, requires_grad=True), torch.randn(b, 4, requires_grad=True)
    tau = torch.tensor(3.0, requires_grad=True)
    e0, e1 = F.normalize(r0, dim=-1), F.normalize(r1, dim=-1)
    gathered = torch.cat([e0, e1])  # all_gather in rank order, with gradients
    losses = [contrastive_loss(e0, gathered, 0, tau.exp()), contrastive_loss(e1, gathered, b, tau.exp())]
    ddp = (losses[0] + losses[1]) / 2  # DDP averages the ranks' gradients
    grads = torch.autograd.grad(ddp, [r0, r1, tau])

    # one process holding the doubled batch, laid out per rank as [q0; t0; q1; t1] with the same pairs
    x0, x1 = r0.detach().clone().requires_grad_(True), r1.detach().clone().requires_grad_(True)
    t2 = tau.detach().clone().requires_grad_(True)
    e = F.normalize(torch.cat([x0, x1]), dim=-1)
    labels = torch.cat([pair_labels(b, 0), pair_labels(b, b)])
    logits = (e @ e.T * t2.exp()).masked_fill(torch.eye(2 * b, dtype=torch.bool), float("-inf"))
    single = F.cross_entropy(logits, labels)
    torch.testing.assert_close(ddp, single)
    for g, h in zip(grads, torch.autograd.grad(single, [x0, x1, t2])):
        torch.testing.assert_close(g, h, atol=1e-6, rtol=1e-5)


def test_temperature_gradient_is_finite_with_masking():
    emb = F.normalize(torch.randn(4, 3), dim=-1)
    tau = torch.tensor(3.0, requires_grad=True)
    contrastive_loss(emb, emb, 0, tau.exp()).backward()
    assert torch.isfinite(tau.grad)


def test_micl_weighting():
    assert float(micl_loss(torch.tensor(1.0), torch.tensor(2.0), (9.0, 1.0))) == pytest_approx(1.1)


def pytest_approx(x):
    import pytest

    return pytest.approx(x)
