"""Exact resume. Training killed mid-epoch and resumed from ``last.ckpt`` gives the same batches, losses
and final weights as an uninterrupted run (CPU, atol 1e-5): data order and RNG states are in the checkpoint.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

STEPS, PER_EPOCH = 8, 4  # two epochs of 4 batches: resumes mid-epoch 0, at the epoch boundary, and mid-epoch 1


class Killed(RuntimeError):
    """Simulated crash."""


class Recorder(Callback):
    def __init__(self) -> None:
        self.steps: list[tuple[int, float, tuple[str, ...]]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append((trainer.global_step, float(outputs["loss"]), tuple(batch["note_ids"])))


class KillAfter(Callback):
    """Raise before step ``k + 1`` starts: step k's checkpoint (saved at its on_train_batch_end) exists."""

    def __init__(self, k: int) -> None:
        self.k = k

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.k:
            raise Killed(f"killed after step {self.k}")


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, str]:
    from notellm2_pl.data.synthetic import PRESETS, generate
    from notellm2_pl.plugins.testing import make_tiny_llm_checkpoint, make_tiny_vision_checkpoint

    root = tmp_path_factory.mktemp("resume")
    generate(root / "data", PRESETS["tiny"])
    return {"data": str(root / "data"), "llm": make_tiny_llm_checkpoint(root / "llm"),
            "clip": make_tiny_vision_checkpoint(root / "clip", "clip")}


def _fit(assets: dict[str, str], ckpt_dir: Path, extra: list[Callback], ckpt_path: str | None = None):
    from notellm2_pl_backbones.connectors import QFormerConnector
    from notellm2_pl_backbones.hf_llm import HFCausalLM
    from notellm2_pl_backbones.hf_vision import CLIPVision

    from notellm2_pl.data.datamodule import NoteDataModule
    from notellm2_pl.training.module import NoteLLM2Module

    L.seed_everything(0 if ckpt_path is None else 123)  # a resumed model must get everything from the checkpoint
    model = NoteLLM2Module(HFCausalLM(assets["llm"]), CLIPVision(assets["clip"]), partial(QFormerConnector.tiny),
                           lr=1e-3, warmup_ratio=0.25)  # the Q-Former's dropout makes the RNG state matter
    dm = NoteDataModule(assets["data"], batch_size=4, max_tokens=64, seed=7)
    trainer = L.Trainer(accelerator="cpu", max_steps=STEPS, limit_train_batches=PER_EPOCH, limit_val_batches=0,
                        num_sanity_val_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(ckpt_dir),
                        callbacks=[ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=1, save_last=True), *extra])
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    return model


@pytest.fixture(scope="module")
def uninterrupted(assets, tmp_path_factory):
    rec = Recorder()
    model = _fit(assets, tmp_path_factory.mktemp("full"), [rec])
    assert len(rec.steps) == STEPS
    return rec.steps, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_killed_and_resumed_runs_match_uninterrupted(assets, uninterrupted, tmp_path: Path) -> None:
    """Killed after steps 2 (mid epoch 0), 4 (epoch boundary) and 7 (mid epoch 1), resumed from last.ckpt each time."""
    full_steps, full_weights = uninterrupted
    recorders, ckpt_path = [], None
    for kill_after in (2, 4, 7):
        rec = Recorder()
        with pytest.raises(Killed):
            _fit(assets, tmp_path, [rec, KillAfter(kill_after)], ckpt_path)
        recorders.append(rec)
        ckpt_path = str(tmp_path / "last.ckpt")
        ckpt = torch.load(ckpt_path, weights_only=True)  # stays loadable the safe way
        (loader_state,) = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
        assert loader_state["consumed_batches"] == (kill_after - 1) % PER_EPOCH + 1
        assert ckpt["global_step"] == kill_after
    recorders.append(Recorder())
    model = _fit(assets, tmp_path, [recorders[-1]], ckpt_path)
    steps = [s for rec in recorders for s in rec.steps]
    assert [s for s, _, _ in steps] == [s for s, _, _ in full_steps]
    assert [ids for _, _, ids in steps] == [ids for _, _, ids in full_steps]  # same data order
    torch.testing.assert_close([loss for _, loss, _ in steps], [loss for _, loss, _ in full_steps], atol=1e-5, rtol=0)
    weights = model.state_dict()
    assert weights.keys() == full_weights.keys()
    for k, v in full_weights.items():
        torch.testing.assert_close(weights[k], v, atol=1e-5, rtol=0, msg=k)


def test_sampler_order_is_seeded_and_sharded() -> None:
    from notellm2_pl.data.sampling import ResumableSampler

    data = list(range(10))
    a, b = ResumableSampler(data, seed=3), ResumableSampler(data, seed=3)
    assert list(a) == list(b) and sorted(a) == data
    a.set_epoch(1)
    assert list(a) != list(b)
    shards = [list(ResumableSampler(data, num_replicas=2, rank=r, seed=3)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == data
    a.skip = 4
    assert list(a) == list(_epoch(data, 3, 1))[4:]
    assert len(list(a)) == 10  # the skip applies to one iteration only


def _epoch(data, seed, epoch):
    from notellm2_pl.data.sampling import ResumableSampler

    s = ResumableSampler(data, seed=seed)
    s.set_epoch(epoch)
    return iter(s)


def test_length_bucketing_pads_less_and_stays_resumable() -> None:
    import random

    from notellm2_pl.data.sampling import ResumableSampler, bucket_order

    rng = random.Random(0)
    lengths = [rng.randint(5, 140) for _ in range(203)]
    data, b = list(range(203)), 8

    def pad(order):  # mean padded fraction of full batches
        full = [order[i:i + b] for i in range(0, len(order) - len(order) % b, b)]
        return sum(1 - sum(lengths[j] for j in x) / (b * max(lengths[j] for j in x)) for x in full) / len(full)

    plain = ResumableSampler(data, seed=1)
    bucketed = ResumableSampler(data, seed=1, lengths=lengths, batch_size=b, bucket_pool=5)
    order = list(bucketed)
    assert sorted(order) == data and order == list(bucketed)  # a permutation, deterministic per (seed, epoch)
    assert pad(order) < 0.5 * pad(list(plain))
    bucketed.set_epoch(1)
    assert list(bucketed) != order
    bucketed.set_epoch(0)
    bucketed.skip = 3 * b  # resume after 3 batches: the same remaining batches
    assert list(bucketed) == order[3 * b:]
    assert bucket_order([4, 2, 0, 1, 3], [5, 1, 4, 2, 3], 2, 10, seed=0)[-1:] == [0]  # leftover (longest) last


def test_datamodule_length_bucketing_reduces_padding(assets) -> None:
    from notellm2_pl_backbones.connectors import QFormerConnector
    from notellm2_pl_backbones.hf_llm import HFCausalLM
    from notellm2_pl_backbones.hf_vision import CLIPVision

    from notellm2_pl.data.datamodule import NoteDataModule
    from notellm2_pl.training.module import NoteLLM2Module

    model = NoteLLM2Module(HFCausalLM(assets["llm"]), CLIPVision(assets["clip"]), partial(QFormerConnector.tiny))

    def pad_fraction(pool: int) -> float:
        dm = NoteDataModule(assets["data"], batch_size=4, max_tokens=140, content_chars=400, seed=7,
                            length_bucketing=pool, val_split="given")  # every tiny training pair: 18 batches
        dm.attach(model)
        dm.setup("fit")
        masks = [b["attention_mask"] for b in dm.train_dataloader()]  # (2B, L) each
        return sum(1 - float(m.float().mean()) for m in masks) / len(masks)

    assert pad_fraction(8) < 0.9 * pad_fraction(0)  # pairs pad to their longer note: the shorter one still pads
