"""Method pieces against independent computations (docs/method.md): the module's mICL loss, the late-fusion gate on
both embeddings, masking of the positive's duplicates, the validation loss, and a tiny run that learns."""

from __future__ import annotations

import random

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from _scale_helpers import collate_pair_notes, make_ckpts, make_pairs, tiny_module
from torch.utils.data import DataLoader

from notellm2_pl.data.processing import NoteProcessor, collate_pairs
from notellm2_pl.data.tables import Note
from notellm2_pl.data.torch_datasets import NoteDataset, collate_notes
from notellm2_pl.model.losses import contrastive_loss, pair_set_loss
from notellm2_pl.plugins.testing import TINY_WORDS


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("method")
    return {"ckpts": make_ckpts(root / "ckpts"), "images": root / "images"}


def _hand_infonce(emb: torch.Tensor, ids: list[str], scale: float, mask_positive_copies: bool = True) -> torch.Tensor:
    """InfoNCE written out (docs/method.md#contrastive-loss): row i's positive is its pair partner; the anchor itself,
    other copies of the anchor's note and other copies of the positive's note are left out of the denominator."""
    n = emb.shape[0]
    sim = emb.double() @ emb.double().T * scale  # (n, n)
    losses = []
    for i in range(n):
        pos = (i + n // 2) % n
        keep = [j for j in range(n) if j == pos
                or (j != i and ids[j] != ids[i] and (ids[j] != ids[pos] or not mask_positive_copies))]
        losses.append(torch.logsumexp(sim[i, keep], 0) - sim[i, pos])
    return torch.stack(losses).mean()


def test_module_micl_loss_equals_hand_computation(setup):
    """0.9 * L(e_m) + 0.1 * L(e_v), by hand from the encoder's outputs, equals the module's loss."""
    module = tiny_module(setup["ckpts"], micl=True, late_fusion=True, loss_weights=(0.9, 0.1)).eval()
    pairs = make_pairs(setup["images"], 4)  # pair 1 reuses pair 0's target: a duplicate positive
    batch = collate_pair_notes(module, pairs)
    ids = [n.note_id for n in [q for q, _ in pairs] + [t for _, t in pairs]]
    with torch.no_grad():
        out = module(batch)
        loss, parts = module.compute_loss(batch)
    scale = float(module.tau.exp())
    hand_m, hand_v = _hand_infonce(out.e_m, ids, scale), _hand_infonce(out.e_v, ids, scale)
    assert abs(float(hand_m - hand_v)) > 1e-3  # the two losses differ, so a swap of the weights shows
    torch.testing.assert_close(parts["loss_m"].double(), hand_m, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(parts["loss_v"].double(), hand_v, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss.double(), 0.9 * hand_m + 0.1 * hand_v, atol=1e-5, rtol=1e-5)


def test_late_fusion_gate_applies_to_both_embeddings(setup):
    """e_m and e_v equal head(gate(h, cls)) computed by hand from the LLM states at the read-out positions."""
    module = tiny_module(setup["ckpts"], micl=True, late_fusion=True).eval()
    enc = module.encoder
    with torch.no_grad():
        torch.nn.init.normal_(enc.gate.proj.weight, std=1.0)  # a large visual vector: the gate's effect is large
        torch.nn.init.normal_(enc.gate.gate.weight, std=1.0)
        batch = collate_pair_notes(module, make_pairs(setup["images"], 3))
        out = module(batch)
        captured: dict[str, torch.Tensor] = {}

        def keep_hidden(_module, _inputs, output) -> None:
            captured["hidden"] = output.hidden  # (B, L+Q, H)

        handle = enc.llm.register_forward_hook(keep_hidden)
        module(batch)
        handle.remove()
        rows = torch.arange(out.e_m.shape[0])
        cls = enc.vision(batch["pixel_values"]).pooled  # (B, D_v)
        v = cls @ enc.gate.proj.weight.T  # (B, H)
        for got, pos in ((out.e_m, out.last_pos), (out.e_v, out.pos_v)):
            h = captured["hidden"][rows, pos]  # (B, H)
            bias = enc.gate.gate.bias if enc.gate.gate.bias is not None else 0.0  # a bias only with gate_init
            z = torch.sigmoid(torch.cat([h, v], -1) @ enc.gate.gate.weight.T + bias)  # (B, H)
            fused = F.normalize(enc.head(z * h + (1 - z) * v).float(), dim=-1)
            ungated = F.normalize(enc.head(h).float(), dim=-1)
            torch.testing.assert_close(got, fused, atol=1e-5, rtol=1e-4)
            assert (got - ungated).norm(dim=-1).min() > 0.1  # skipping the gate would show


def test_duplicate_of_the_positive_is_masked():
    """Row 1's positive is note "t" (row 5); row 3 is another copy of "t" and is no negative of row 1."""
    torch.manual_seed(0)
    emb = F.normalize(torch.randn(8, 6), dim=-1)
    emb[3] = emb[5]  # a copy of the positive: scores as high as the positive
    emb[1] = emb[5]  # an anchor already matched to its positive: only the duplicate keeps its loss up
    ids = ["a", "b", "c", "t", "w", "t", "y", "z"]  # pairs (a, w), (b, t), (c, y), (t, z)
    codes = torch.tensor([ord(i) for i in ids])
    got = contrastive_loss(emb, emb, 0, torch.tensor(5.0), codes, codes)
    torch.testing.assert_close(got.double(), _hand_infonce(emb, ids, 5.0), atol=1e-6, rtol=1e-6)
    unmasked = _hand_infonce(emb, ids, 5.0, mask_positive_copies=False)
    assert float(unmasked - got) > 0.05  # leaving the duplicate as a negative would show


def test_pair_set_loss_is_the_chunked_in_batch_loss():
    torch.manual_seed(1)
    emb = F.normalize(torch.randn(10, 4), dim=-1)
    pairs = torch.tensor([[0, 5], [1, 6], [2, 7], [3, 8], [4, 9]])
    scale = torch.tensor(4.0)
    first = contrastive_loss(emb[[0, 1, 5, 6]], emb[[0, 1, 5, 6]], 0, scale)  # chunks of 2 pairs
    second = contrastive_loss(emb[[2, 3, 7, 8]], emb[[2, 3, 7, 8]], 0, scale)
    third = contrastive_loss(emb[[4, 9]], emb[[4, 9]], 0, scale)
    expected = (4 * first + 4 * second + 2 * third) / 10
    torch.testing.assert_close(pair_set_loss(emb, pairs, 2, scale), expected)


# ------------------------------------------------------------------------------------------------ a tiny run
def _mapped_pairs(n: int, seed: int) -> list[tuple[Note, Note]]:
    """Pairs ``("a b", "f(a) f(b)")`` with ``f`` a fixed shift of the word list: query and target share no word, so
    an untrained model is at chance and only a learned word-to-word association retrieves the partner."""
    rng = random.Random(seed)
    f = dict(zip(TINY_WORDS, TINY_WORDS[1:] + TINY_WORDS[:1]))
    keys = rng.sample([(a, b) for a in TINY_WORDS for b in TINY_WORDS if a != b], n)
    return [(Note(f"q{i}", f"{a} {b}", [], "", None), Note(f"t{i}", f"{f[a]} {f[b]}", [], "", None))
            for i, (a, b) in enumerate(keys)]


class _PairData(L.LightningDataModule):
    """Training pairs in batches of ``batch_size`` pairs; validation pool = the held-out pairs' notes."""

    def __init__(self, processor: NoteProcessor, train: list, val: list, batch_size: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["processor", "train", "val"])
        self.processor, self.train = processor, [(processor(q), processor(t)) for q, t in train]
        self.notes = {n.note_id: n for p in val for n in p}
        self.val_pairs = [(q.note_id, t.note_id) for q, t in val]
        self.val_pool_ids = sorted(self.notes)

    def train_dataloader(self) -> DataLoader:
        gen = torch.Generator().manual_seed(0)
        return DataLoader(self.train, batch_size=self.hparams.batch_size, shuffle=True, drop_last=True,
                          collate_fn=collate_pairs, generator=gen)

    def val_dataloader(self) -> DataLoader:
        ds = NoteDataset(self.val_pool_ids, self.notes, self.processor)
        return DataLoader(ds, batch_size=32, collate_fn=collate_notes)


def test_tiny_training_run_learns_and_logs_validation_loss(setup):
    """A text-only tiny model trained for 128 steps (a few seconds) retrieves held-out partners far above chance,
    and logs ``val/loss``, which falls."""
    from notellm2_pl_backbones.hf_llm import HFCausalLM

    from notellm2_pl.model.config import EncoderConfig
    from notellm2_pl.training.module import NoteLLM2Module

    L.seed_everything(0, verbose=False)
    encoder = EncoderConfig(embed_dim=16, micl=False, late_fusion=False)
    module = NoteLLM2Module(HFCausalLM(setup["ckpts"]["llm"]), encoder=encoder, lr=3e-4, warmup_ratio=0.0)
    pairs = _mapped_pairs(256 + 96, seed=0)  # 96 held-out pairs: unseen word combinations of seen words
    data = _PairData(NoteProcessor(module.note_format(), max_tokens=32), pairs[:256], pairs[256:])
    trainer = L.Trainer(max_epochs=4, accelerator="cpu", precision="32-true", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        check_val_every_n_epoch=4, deterministic=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add contention (1.5 s vs 40 s on 2 busy cores)
    try:
        trainer.validate(module, datamodule=data, verbose=False)
        before = {k: float(v) for k, v in trainer.callback_metrics.items()}
        trainer.fit(module, datamodule=data)
        after = {k: float(v) for k, v in trainer.callback_metrics.items()}
        hand_loss = _hand_val_loss(module, data, pairs[256:])
    finally:
        torch.set_num_threads(threads)
    assert {"val/loss", "val/recall"} <= before.keys() and {"val/loss", "val/recall"} <= after.keys()
    chance = after["val/chance@10"]
    assert before["val/R@10"] < 2 * chance, (before, after)  # untrained: no better than chance
    assert after["val/R@10"] >= 3 * chance, (before, after)
    assert after["val/loss"] < before["val/loss"] - 0.5, (before, after)
    assert after["val/loss"] == pytest.approx(hand_loss, abs=1e-4)  # the logged value is the documented loss


def _hand_val_loss(module, data: _PairData, pairs: list[tuple[Note, Note]]) -> float:
    """The validation loss by hand: each chunk of ``batch_size`` pairs embedded as a training batch, InfoNCE over
    its anchors, averaged over every anchor."""
    size, total = data.hparams.batch_size, 0.0
    module.eval()
    with torch.no_grad():
        for start in range(0, len(pairs), size):
            chunk = pairs[start:start + size]
            batch = collate_pairs([(data.processor(q), data.processor(t)) for q, t in chunk])
            ids = [q.note_id for q, _ in chunk] + [t.note_id for _, t in chunk]
            total += float(_hand_infonce(module(batch).e_m, ids, float(module.tau.exp()))) * len(ids)
    return total / (2 * len(pairs))
