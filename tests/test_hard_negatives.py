"""Hard negatives: the graph exclusion, the mined note, the loss with extra negatives, the batches, a tiny fit."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _scale_helpers import collate_pair_notes, make_ckpts, make_pairs, tiny_module
from torch.utils.data import DataLoader

from notellm2_pl.data.pair_graph import PairGraph
from notellm2_pl.data.processing import collate_pairs
from notellm2_pl.data.tables import Note
from notellm2_pl.data.torch_datasets import PairDataset
from notellm2_pl.model.losses import contrastive_loss
from notellm2_pl.training.hard_negatives import (
    HardNegativeConfig,
    HardNegativeMiner,
    mine_negatives,
    select_negatives,
)

# a - b - c - d - e - f (a chain), g - h apart, i alone through a self-pair
CHAIN = [("a", "b"), ("c", "b"), ("c", "d"), ("d", "e"), ("e", "f"), ("g", "h"), ("i", "i")]


def _graph() -> PairGraph:
    return PairGraph.from_pairs(CHAIN)


# ------------------------------------------------------------------------------------------------ graph
def test_graph_depths_on_a_hand_made_chain():
    g = _graph()
    p = g.position
    assert g.note_ids == list("abcdefghi")
    assert g.within(p["a"], p["a"], 0) and not g.within(p["a"], p["b"], 0)
    assert g.within(p["a"], p["b"], 1) and g.within(p["b"], p["a"], 1)  # undirected
    assert not g.within(p["a"], p["c"], 1) and g.within(p["a"], p["c"], 2)
    assert not g.within(p["a"], p["d"], 2) and g.within(p["a"], p["d"], 3)
    assert not g.within(p["a"], p["e"], 3) and g.within(p["a"], p["e"], 4)
    assert not g.within(p["a"], p["g"], 10) and g.adjacency[p["i"]] == set()  # a self-pair adds no edge
    assert g.ball(p["c"], 1) == {p["b"], p["c"], p["d"]}


def test_selection_excludes_depth_1_and_2_of_the_query_and_of_its_target():
    g = _graph()
    p = g.position
    # pair (c, d): depth <= 2 of c is {a, b, c, d, e}; of d also f. g is the first note outside both.
    ranked = [p[n] for n in "bdaefgh"]
    assert select_negatives(ranked, p["c"], p["d"], g, skip_top=0, count=1) == [p["g"]]
    assert select_negatives(ranked, p["c"], p["d"], g, skip_top=1, count=1) == [p["h"]]
    assert select_negatives(ranked, p["c"], p["d"], g, skip_top=0, count=3) == [p["g"], p["h"]]
    # pair (a, b): c is within 2 of both, d within 2 of b (b-c-d); e (3 pairs from b) is the first allowed
    assert select_negatives([p[n] for n in "cdef"], p["a"], p["b"], g, 0, 1) == [p["e"]]
    assert select_negatives([p["c"], -1, p["g"]], p["a"], p["b"], g, 0, 1) == []  # -1 ends the list


def _unit(angles_deg: list[float]) -> np.ndarray:
    a = np.radians(np.array(angles_deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def _brute_force_negative(emb: np.ndarray, g: PairGraph, q: int, t: int, skip: int) -> int:
    """Every note by descending cosine to the query (ties: lower position), minus the query itself and the notes
    within two pairs of the query or the target."""
    order = sorted(range(len(emb)), key=lambda j: (-float(emb[q] @ emb[j]), j))
    allowed = [j for j in order if j != q and not g.within(q, j, 2) and not g.within(t, j, 2)]
    return allowed[skip] if len(allowed) > skip else -1


@pytest.mark.parametrize("skip_top", [0, 1])
def test_mined_negative_is_the_nearest_non_related_note(skip_top):
    g = _graph()
    rng = np.random.default_rng(0)
    emb = _unit(list(rng.uniform(0, 360, size=len(g))))
    pairs = np.array([(g.position[q], g.position[t]) for q, t in CHAIN if q != t])
    mined = mine_negatives(emb, g, pairs, HardNegativeConfig(start_step=0, top_k=8, skip_top=skip_top))
    expected = [_brute_force_negative(emb, g, int(q), int(t), skip_top) for q, t in pairs]
    assert mined.rows[:, 0].tolist() == expected
    assert mined.stats["pairs_with_negative"] == np.mean([e >= 0 for e in expected])


def test_false_negative_share_counts_depth_3_and_held_out_pairs():
    g = _graph()
    p = g.position
    # pair (e, f): within 2 of e or f are c, d, f; then by similarity to e come b (e-d-c-b: depth 3), a (depth 4)
    angles = {"e": 0, "f": 1, "d": 2, "c": 3, "b": 4, "a": 5, "g": 90, "h": 120, "i": 180}
    emb = _unit([angles[n] for n in g.note_ids])
    pairs = np.array([(p["e"], p["f"])])
    mined = mine_negatives(emb, g, pairs, HardNegativeConfig(start_step=0, top_k=8))
    assert mined.rows.tolist() == [[p["b"]]]  # b: three pairs from e (e-d-c-b), the nearest allowed
    assert mined.stats["depth3_share"] == 1.0 and mined.stats["false_negative_share"] == 1.0
    assert mined.stats["heldout_pair_share"] == 0.0
    assert mined.stats["mean_score"] == pytest.approx(math.cos(math.radians(4)), abs=1e-6)
    # skipping b, the next is a (depth 4): not counted, unless a validation pair says e and a are related
    cfg = HardNegativeConfig(start_step=0, top_k=8, skip_top=1)
    assert mine_negatives(emb, g, pairs, cfg).stats["false_negative_share"] == 0.0
    held = mine_negatives(emb, g, pairs, cfg, held_out={(p["a"], p["e"])}).stats
    assert held["heldout_pair_share"] == 1.0 and held["false_negative_share"] == 1.0 and held["depth3_share"] == 0.0


def test_config_checks_and_schedule():
    off = HardNegativeConfig()
    assert not off.enabled and not off.due(100, None)
    cfg = HardNegativeConfig(start_step=3, refresh_every=2)
    assert [s for s in range(10) if cfg.due(s, None if s <= 3 else 3)] == [3, 5, 7, 9]
    assert not cfg.due(5, 5)  # gradient accumulation: once per optimiser step
    assert HardNegativeConfig(start_step=3).due(8, None) and not HardNegativeConfig(start_step=3).due(8, 3)
    with pytest.raises(ValueError, match="top_k"):
        HardNegativeConfig(start_step=0, top_k=2, skip_top=2)
    with pytest.raises(ValueError, match="no option"):
        HardNegativeConfig.from_value({"start": 1})
    assert HardNegativeConfig.from_value(cfg.to_dict()) == cfg


# ------------------------------------------------------------------------------------------------ loss
def _brute_force_loss(emb: torch.Tensor, neg: torch.Tensor, scale: float, ids: list[int], neg_ids: list[int]) -> float:
    """Per anchor: CE of its partner against every other batch note and every extra negative, leaving out copies of
    the anchor's note and of its positive's note (the positive itself stays)."""
    n, half, total = emb.shape[0], emb.shape[0] // 2, 0.0
    for i in range(n):
        pos = (i + half) % n
        cols = [(float(emb[i] @ emb[j]) * scale, j == pos) for j in range(n)
                if j != i and (j == pos or ids[j] not in (ids[i], ids[pos]))]
        cols += [(float(emb[i] @ neg[m]) * scale, False) for m in range(neg.shape[0])
                 if neg_ids[m] not in (ids[i], ids[pos])]
        total += math.log(sum(math.exp(v) for v, _ in cols)) - next(v for v, is_pos in cols if is_pos)
    return total / n


def test_loss_with_extra_negatives_equals_brute_force_and_the_old_loss_without():
    torch.manual_seed(0)
    emb = F.normalize(torch.randn(8, 5, dtype=torch.float64), dim=-1)
    neg = F.normalize(torch.randn(3, 5, dtype=torch.float64), dim=-1)
    ids = [0, 1, 2, 3, 10, 11, 12, 13]
    neg_ids = [20, 11, 21]  # the second negative is pair 1's target: masked for anchors 1 and 5
    scale = torch.tensor(2.5)
    t_ids, t_neg = torch.tensor(ids), torch.tensor(neg_ids)
    got = contrastive_loss(emb, emb, 0, scale, t_ids, t_ids, neg, t_neg)
    assert float(got) == pytest.approx(_brute_force_loss(emb, neg, 2.5, ids, neg_ids), rel=1e-6)  # fp32 loss
    no_ids = contrastive_loss(emb, emb, 0, scale, negatives=neg)
    assert float(no_ids) == pytest.approx(_brute_force_loss(emb, neg, 2.5, ids, [-1, -2, -3]), rel=1e-6)
    old = contrastive_loss(emb, emb, 0, scale, t_ids, t_ids)
    assert torch.equal(old, contrastive_loss(emb, emb, 0, scale, t_ids, t_ids, None, None))
    assert torch.equal(old, contrastive_loss(emb, emb, 0, scale, t_ids, t_ids, neg[:0], t_neg[:0]))
    assert float(got) > float(old)  # more negatives, larger denominators


def test_extra_negatives_receive_gradients_unless_masked():
    torch.manual_seed(1)
    emb = F.normalize(torch.randn(4, 3), dim=-1)
    neg = F.normalize(torch.randn(2, 3), dim=-1).requires_grad_(True)
    ids = torch.tensor([0, 1, 2, 3])
    contrastive_loss(emb, emb, 0, torch.tensor(5.0), ids, ids, neg, torch.tensor([9, 0])).backward()
    assert float(neg.grad[0].abs().sum()) > 0
    # note 0 is anchor 0 and the positive of anchor 2: masked for both, a negative of anchors 1 and 3 only
    neg_only = neg.detach().clone().requires_grad_(True)
    rows = torch.tensor([1, 3])
    contrastive_loss(emb, emb, 0, torch.tensor(5.0), ids, ids, neg_only[1:], torch.tensor([0])).backward()
    logits = 5.0 * emb[rows] @ torch.cat([emb, neg_only[1:].detach()]).T  # (2, 5)
    logits[torch.arange(2), rows] = float("-inf")
    weight = logits.softmax(-1)[:, -1]  # (2,) each anchor's softmax weight on the negative
    torch.testing.assert_close(neg_only.grad[1], 5.0 * (weight[:, None] * emb[rows]).sum(0) / 4)


# ------------------------------------------------------------------------------------------------ batches
class _Proc:
    """A stand-in processor: the note id's characters as token ids."""

    def __call__(self, note: Note, train: bool = False) -> dict:
        return {"input_ids": [ord(c) for c in note.note_id], "image_pos": -1, "marker_pos": -1,
                "note_id": note.note_id}


def _dataset() -> PairDataset:
    notes = {n: Note(n, n, [], n, None) for n in "abcdefghi"}
    return PairDataset([(q, t) for q, t in CHAIN if q != t], notes, _Proc())


def test_batches_carry_negatives_after_the_pairs_and_workers_see_refreshes():
    ds = _dataset()
    plain = collate_pairs([ds[0], ds[1]])
    assert plain["note_ids"] == ["a", "c", "b", "b"] and "num_negatives" not in plain
    table = ds.attach_negatives(list("abcdefghi"), per_pair=2)
    assert collate_pairs([ds[0], ds[1]])["note_ids"] == ["a", "c", "b", "b"]  # nothing mined yet
    loader = DataLoader(ds, batch_size=2, collate_fn=collate_pairs, num_workers=1, persistent_workers=True)
    assert "num_negatives" not in next(iter(loader))  # the worker is running now
    table[0] = torch.tensor([6, -1])  # pair (a, b): g
    table[1] = torch.tensor([7, 8])  # pair (c, b): h, i
    batch = next(iter(loader))
    assert batch["note_ids"] == ["a", "c", "b", "b", "g", "h", "i"] and batch["num_negatives"] == 3
    assert batch["input_ids"].shape[0] == 7 and batch["note_hash"].shape == (7,)


def test_miner_state_survives_a_checkpoint():
    miner = HardNegativeMiner(HardNegativeConfig(start_step=2, refresh_every=5))
    assert miner.state_dict() == {}
    miner.table, miner.last_mined = torch.tensor([[3], [-1]]), 7
    state = miner.state_dict()
    resumed = HardNegativeMiner(HardNegativeConfig(start_step=2, refresh_every=5))
    resumed.load_state_dict(state)
    assert resumed.last_mined == 7 and torch.equal(resumed._saved, torch.tensor([[3], [-1]]))


# ------------------------------------------------------------------------------------------------ the module
@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("hn")
    return {"plain": make_ckpts(root / "plain"), "images": root / "images"}


def _batch_with_negatives(module, images, n_pairs: int = 4, n_neg: int = 3) -> dict:
    """``n_pairs`` pairs and ``n_neg`` negatives (the last one a copy of pair 0's target) collated as training does."""
    pairs = make_pairs(images, n_pairs + n_neg)
    batch = collate_pair_notes(module, pairs[:n_pairs])
    from notellm2_pl.data.processing import NoteProcessor

    proc = NoteProcessor(module.note_format(), max_tokens=64)
    negs = [proc(q, train=True) for q, _ in pairs[n_pairs:n_pairs + n_neg - 1]] + [proc(pairs[0][1], train=True)]
    items = [(proc(q, train=True), proc(t, train=True), []) for q, t in pairs[:n_pairs]]
    items[0] = (*items[0][:2], negs)
    full = collate_pairs(items)
    assert full["num_negatives"] == n_neg and torch.equal(full["note_hash"][:2 * n_pairs], batch["note_hash"])
    return full


@pytest.mark.parametrize("micl", [True, False])
def test_module_loss_uses_the_negatives_for_e_m_and_e_v(ckpts, micl):
    module = tiny_module(ckpts["plain"], micl=micl).eval()
    batch = _batch_with_negatives(module, ckpts["images"])
    out = module(batch)
    loss, parts = module.loss_from_output(out, batch["note_hash"], negatives=batch["num_negatives"])
    n, ids, scale = 8, batch["note_hash"], module.tau.exp()

    def by_hand(e: torch.Tensor) -> torch.Tensor:
        return contrastive_loss(e[:n], e[:n], 0, scale, ids[:n], ids[:n], e[n:], ids[n:])

    torch.testing.assert_close(parts["loss_m"], by_hand(out.e_m))
    if micl:
        torch.testing.assert_close(parts["loss_v"], by_hand(out.e_v))
        torch.testing.assert_close(loss, (9 * parts["loss_m"] + parts["loss_v"]) / 10)
    in_batch_only = contrastive_loss(out.e_m[:n], out.e_m[:n], 0, scale, ids[:n], ids[:n])
    assert float(parts["loss_m"]) > float(in_batch_only)
    torch.testing.assert_close(module.compute_loss(batch)[0], loss)


def test_grad_cache_with_negatives_equals_the_plain_gradient(ckpts):
    from _scale_helpers import assert_grads_close, grads

    from notellm2_pl.training.gradcache import grad_cache_backward

    module = tiny_module(ckpts["plain"]).eval().double()
    batch = _batch_with_negatives(module, ckpts["images"])
    batch = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in batch.items()}
    module.zero_grad(set_to_none=True)
    ref, _ = module.compute_loss(batch)
    ref.backward()
    g_ref = grads(module)
    module.zero_grad(set_to_none=True)
    loss, _ = grad_cache_backward(module, batch, 4, verify=True)  # 11 rows: the negatives span two chunks
    torch.testing.assert_close(loss, ref.detach(), atol=1e-9, rtol=1e-9)
    assert_grads_close(grads(module), g_ref, atol=1e-12, rtol=1e-9)


# ------------------------------------------------------------------------------------------------ a tiny fit
@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, str]:
    from notellm2_pl.data.synthetic import PRESETS, generate
    from notellm2_pl.plugins.testing import make_tiny_llm_checkpoint, make_tiny_vision_checkpoint

    root = tmp_path_factory.mktemp("hn_fit")
    generate(root / "data", PRESETS["tiny"])
    return {"data": str(root / "data"), "llm": make_tiny_llm_checkpoint(root / "llm"),
            "clip": make_tiny_vision_checkpoint(root / "clip", "clip")}


@pytest.mark.slow
@pytest.mark.parametrize("grad_cache_chunk", [None, 5])
def test_tiny_fit_mines_logs_and_trains_on_hard_negatives(assets, tmp_path, grad_cache_chunk):
    import lightning as L
    from notellm2_pl_backbones.connectors import QFormerConnector
    from notellm2_pl_backbones.hf_llm import HFCausalLM
    from notellm2_pl_backbones.hf_vision import CLIPVision

    from notellm2_pl.data.datamodule import NoteDataModule
    from notellm2_pl.training.module import NoteLLM2Module

    L.seed_everything(0)
    model = NoteLLM2Module(HFCausalLM(assets["llm"]), CLIPVision(assets["clip"]), partial(QFormerConnector.tiny),
                           lr=1e-3, grad_cache_chunk=grad_cache_chunk,
                           hard_negatives=HardNegativeConfig(start_step=1, refresh_every=2))
    seen: list[int] = []
    loss_from_output = model.loss_from_output

    def spy(out, ids, logit_scale=None, negatives=0):
        seen.append(negatives)
        return loss_from_output(out, ids, logit_scale, negatives)

    model.loss_from_output = spy
    dm = NoteDataModule(assets["data"], batch_size=4, eval_batch_size=16, max_tokens=64, val_pool_extra=10)
    trainer = L.Trainer(accelerator="cpu", max_steps=5, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path))
    trainer.fit(model, dm)
    miner = next(c for c in trainer.callbacks if isinstance(c, HardNegativeMiner))
    assert miner.last_mined == 3  # mined at steps 1 and 3
    assert seen[:2] == [0, 0] and seen[-1] > 0  # warm-up without, then (after the prefetched batch) with negatives
    assert bool((miner.table >= 0).any())
    share = float(trainer.callback_metrics["train/hard_negatives/false_negative_share"])
    assert 0.0 <= share <= 1.0
    assert float(trainer.callback_metrics["train/hard_negatives/pairs_with_negative"]) > 0.5
    assert model.encoder.vision.training is False  # the mining pass restored the frozen tower's eval mode
