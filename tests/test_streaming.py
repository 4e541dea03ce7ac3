"""Streaming data (litdata): prepared chunks serve the same batches as the in-memory path, resume exactly mid-epoch,
and shard every pair exactly once across 2 processes (gloo)."""

from __future__ import annotations

import os
import shutil
import socket
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _scale_helpers import make_ckpts, tiny_module

from notellm2_pl.data.datamodule import NoteDataModule
from notellm2_pl.data.problems import DataError
from notellm2_pl.data.processing import collate_pairs
from notellm2_pl.data.sampling import resumable_loader
from notellm2_pl.data.streaming.prepare import PrepareOptions, prepare
from notellm2_pl.data.streaming.source import StreamSource
from notellm2_pl.data.torch_datasets import PairDataset

# The given validation on both sides: a carved one (val_split auto) is refused for streaming data.
DM_ARGS = {"batch_size": 4, "eval_batch_size": 8, "max_tokens": 64, "seed": 7, "val_split": "given"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """The tiny synthetic dataset, prepared twice: pairs shuffled at prepare (default) and in file order."""
    from notellm2_pl.data.synthetic import PRESETS, generate

    root = tmp_path_factory.mktemp("streaming")
    generate(root / "raw", PRESETS["tiny"])
    prepare(str(root / "raw"), str(root / "prepared"))
    prepare(str(root / "raw"), str(root / "ordered"), PrepareOptions(pair_seed=None))
    return {"root": str(root), "raw": str(root / "raw"), "prepared": str(root / "prepared"),
            "ordered": str(root / "ordered"), "ckpts": make_ckpts(root / "ckpts")}


@pytest.fixture(scope="module")
def module(data):
    return tiny_module(data["ckpts"])


def _processor(module):
    from notellm2_pl.data.processing import NoteProcessor
    from notellm2_pl.data.prompts import TextLimits

    return NoteProcessor(module.note_format(), TextLimits(), DM_ARGS["max_tokens"])


def _dms(data, module, prepared: str) -> tuple[NoteDataModule, NoteDataModule]:
    mem = NoteDataModule(data["raw"], **DM_ARGS)
    stream = NoteDataModule(data["raw"], streaming=prepared, **DM_ARGS)
    for dm in (mem, stream):
        dm.attach(module)
        dm.setup("fit")
        dm.setup("test")
    return mem, stream


def _assert_same_batch(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        if torch.is_tensor(v):
            assert torch.equal(v, b[k]), k
        else:
            assert v == b[k], k


def _assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        _assert_same_batch(x, y)


def test_prepare_writes_every_note_and_pair(data):
    from notellm2_pl.data.streaming.layout import read_manifest
    from notellm2_pl.data.tables import load_split

    manifest = read_manifest(data["prepared"])
    counts = manifest["counts"]
    for split in ("train", "val", "test"):
        loaded = load_split(data["raw"], split)
        assert counts[f"pairs_{split}"] == len(loaded.pairs["all"])
        if split != "val":
            assert counts[f"notes_{split}"] == len(loaded.notes)
    assert manifest["pair_sets"]["test"][0] == "all" and len(manifest["pair_sets"]["test"]) == 5
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare(data["raw"], data["prepared"])
    with pytest.raises(DataError, match="prepare"):
        StreamSource(data["raw"])  # a raw dataset, not prepared


def test_evaluation_batches_and_pools_are_identical(data, module):
    mem, stream = _dms(data, module, data["prepared"])
    assert stream.val_pairs == mem.val_pairs
    assert stream.val_pool_ids == mem.val_pool_ids
    assert stream.pool_ids("test") == mem.pool_ids("test")
    assert stream.test_pair_sets() == mem.test_pair_sets()
    for loader in ("val_dataloader", "test_dataloader", "predict_dataloader"):
        _assert_same_batches(list(getattr(mem, loader)()), list(getattr(stream, loader)()))


def test_derived_test_subsets_are_identical(data, module, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(data["raw"], raw)
    for f in raw.glob("pairs_test_*"):
        f.unlink()
    prepare(str(raw), str(tmp_path / "prepared"))
    mem = NoteDataModule(str(raw), **DM_ARGS)
    stream = NoteDataModule(str(raw), streaming=str(tmp_path / "prepared"), **DM_ARGS)
    sets = mem.test_pair_sets()
    assert len(sets) == 5 and stream.test_pair_sets() == sets


def test_training_batches_identical_without_shuffle(data, module):
    mem, _ = _dms(data, module, data["ordered"])
    split = mem._split("train")
    ds = PairDataset(split.pairs["all"], split.notes, mem.processor)
    expected = list(resumable_loader(ds, None, 4, 7, shuffle=False, collate_fn=collate_pairs, drop_last=True))
    got = list(StreamSource(data["ordered"]).train_loader(mem.processor, 4, 7, shuffle=False))
    _assert_same_batches(expected, got)


def _pairs_of(batches: list[dict]) -> list[tuple[str, str]]:
    out = []
    for b in batches:
        ids = b["note_ids"]
        half = len(ids) // 2  # [queries..., targets...]
        out += list(zip(ids[:half], ids[half:]))
    return out


def test_shuffled_epoch_holds_the_same_pairs(data, module):
    """litdata shuffles by chunk and within chunks, not with the in-memory permutation: same multiset of pairs."""
    mem, stream = _dms(data, module, data["prepared"])
    mem.trainer = stream.trainer = None
    expected = _pairs_of(list(mem.train_dataloader()))
    loader = stream.train_dataloader()
    first, second = _pairs_of(list(loader)), _pairs_of(list(loader))
    assert len(expected) == 72  # 72 pairs, batch 4: drop_last drops nothing on either path
    assert Counter(first) == Counter(expected) == Counter(second)
    assert first != second  # a new order each epoch
    assert _pairs_of(list(stream.train_dataloader())) == first  # seeded


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_and_at_the_boundary_is_exact(data, module, workers):
    """A loader restored from ``state_dict`` continues with exactly the batches the uninterrupted loader gives.

    ``progress`` reports the batches training consumed while the loader has already fetched one more (Lightning
    fetches ahead): the state must be the consumed position.
    """
    source, processor = StreamSource(data["prepared"]), _processor(module)

    def loader(consumed=None):
        progress = None if consumed is None else (lambda: (consumed[0], 18))
        return source.train_loader(processor, 4, 7, progress=progress, num_workers=workers)

    full = loader()
    epochs = [_pairs_of(list(full)) for _ in range(2)]
    assert len(epochs[0]) == 72
    for k in (5, 18):  # mid-epoch, end of epoch
        consumed = [k]
        first = loader(consumed)
        it = iter(first)
        seen = [next(it) for _ in range(min(k + 1, 18))]  # one batch fetched ahead of training (unless at the end)
        state = first.state_dict()
        if k < 18:
            first.progress = None  # litdata's own count includes the batch fetched ahead
            assert first.state_dict()["num_samples_yielded"] == (k + 1) * 4 != state["num_samples_yielded"]
        del it
        resumed = loader()
        resumed.load_state_dict(state)
        rest = _pairs_of(list(resumed))
        if k < 18:
            assert _pairs_of(seen[:k]) + rest == epochs[0]
            rest = _pairs_of(list(resumed))
        assert rest == epochs[1], k


def test_streaming_rejects_in_memory_only_settings(data, module):
    dm = NoteDataModule(data["raw"], streaming=data["prepared"], length_bucketing=4, **DM_ARGS)
    dm.attach(module)
    with pytest.raises(ValueError, match="length_bucketing"):
        dm.train_dataloader()


def test_prepare_command(data, tmp_path, capsys):
    from notellm2_pl.commands.main import main

    assert main(["prepare", data["raw"], str(tmp_path / "out"), "--keep-pair-order"]) == 0
    assert "pairs_train" in capsys.readouterr().out
    assert StreamSource(str(tmp_path / "out")).manifest["pair_seed"] is None
    assert main(["prepare", data["raw"], str(tmp_path / "out")]) == 2  # not empty, no --overwrite


@pytest.mark.slow
def test_optimize_writes_the_same_items(data, tmp_path):
    """The URL path (litdata.optimize, here to a local folder) writes what the in-process writer writes."""
    from litdata import StreamingDataset

    from notellm2_pl.data.streaming.prepare import _write, id_pair_item
    from notellm2_pl.data.tables import load_split

    pairs = load_split(data["raw"], "val").pairs["all"]
    _write(id_pair_item, pairs, str(tmp_path / "opt"), PrepareOptions(), use_optimize=True)
    _write(id_pair_item, pairs, str(tmp_path / "local"), PrepareOptions())
    a, b = StreamingDataset(str(tmp_path / "opt")), StreamingDataset(str(tmp_path / "local"))
    assert [bytes(x["query_id"]) for x in a] == [bytes(x["query_id"]) for x in b]


# ------------------------------------------------------------------------------------- Lightning: kill and resume
STEPS, PER_EPOCH = 8, 4


def _fit(data: dict, ckpt_dir: Path, extra: list, ckpt_path: str | None = None) -> None:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    L.seed_everything(0 if ckpt_path is None else 123)  # a resumed run must get everything from the checkpoint
    model = tiny_module(data["ckpts"], warmup_ratio=0.25)
    dm = NoteDataModule(data["raw"], streaming=data["prepared"], **DM_ARGS)
    trainer = L.Trainer(accelerator="cpu", max_steps=STEPS, limit_train_batches=PER_EPOCH, limit_val_batches=0,
                        num_sanity_val_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(ckpt_dir),
                        callbacks=[ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=1, save_last=True), *extra])
    trainer.fit(model, dm, ckpt_path=ckpt_path)


@pytest.mark.slow
def test_lightning_killed_and_resumed_streaming_run_matches(data, tmp_path):
    """Killed after steps 2 (mid epoch 0), 4 (epoch boundary) and 7 (mid epoch 1) and resumed from last.ckpt: the
    same batches and losses as an uninterrupted run (the streaming twin of tests/test_resume.py)."""
    from test_resume import KillAfter, Killed, Recorder

    full = Recorder()
    _fit(data, tmp_path / "full", [full])
    assert len(full.steps) == STEPS
    recorders, ckpt_path = [], None
    for kill_after in (2, 4, 7):
        rec = Recorder()
        with pytest.raises(Killed):
            _fit(data, tmp_path / "run", [rec, KillAfter(kill_after)], ckpt_path)
        recorders.append(rec)
        ckpt_path = str(tmp_path / "run" / "last.ckpt")
        torch.load(ckpt_path, weights_only=True)  # stays loadable the safe way
    recorders.append(Recorder())
    _fit(data, tmp_path / "run", [recorders[-1]], ckpt_path)
    steps = [s for rec in recorders for s in rec.steps]
    assert [ids for _, _, ids in steps] == [ids for _, _, ids in full.steps]  # same data order
    torch.testing.assert_close([loss for _, loss, _ in steps], [loss for _, loss, _ in full.steps], atol=1e-5,
                               rtol=0)


# -------------------------------------------------------------------------------------------- 2 processes, gloo
WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shard_worker(rank: int, port: int, prepared: str, ckpts: dict[str, str], out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        processor = _processor(tiny_module(ckpts))
        source = StreamSource(prepared)
        result = {}
        for drop_last in (False, True):
            loader = source.train_loader(processor, 4, 7, drop_last=drop_last)
            result[drop_last] = [_pairs_of(list(loader)) for _ in range(2)]  # two epochs
            del loader
        torch.save(result, f"{out}.{rank}")
        del source, processor
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_cover_every_pair_once_per_epoch(data, tmp_path):
    from notellm2_pl.data.tables import load_split

    out = str(tmp_path / "shard")
    mp.spawn(_shard_worker, args=(_free_port(), data["prepared"], data["ckpts"], out), nprocs=WORLD, join=True)
    ranks = [torch.load(f"{out}.{r}") for r in range(WORLD)]
    every = Counter(load_split(data["raw"], "train").pairs["all"])
    for epoch in range(2):
        shards = [r[False][epoch] for r in ranks]
        assert all(shards) and Counter(shards[0] + shards[1]) == every  # each pair exactly once
        equal = [r[True][epoch] for r in ranks]
        assert len(equal[0]) == len(equal[1]) and not set(equal[0]) & set(equal[1])  # drop_last: equal, disjoint
    assert ranks[0][False][0] != ranks[0][False][1]



def test_evaluate_on_streaming_data_equals_the_raw_root(exported, tmp_path, capsys):
    """``evaluate --streaming PREPARED`` streams the test pool from the chunks and gives the raw root's results."""
    import json

    from notellm2_pl.commands.evaluate import main as evaluate_main
    from notellm2_pl.retrieval.evaluation import load_test_pool

    prepared = str(tmp_path / "prepared")
    prepare(str(exported["data"]), prepared)
    ids, lazy, sets = load_test_pool(None, streaming=prepared)
    raw_ids, raw, raw_sets = load_test_pool(exported["data"])
    assert ids == raw_ids and sets == raw_sets and not isinstance(lazy, dict)
    assert lazy[ids[3]].title == raw[ids[3]].title and lazy[ids[3]].image_bytes  # read from the chunks on access
    results = {}
    for name, source in (("raw", ["--data", str(exported["data"])]), ("stream", ["--streaming", prepared])):
        out = tmp_path / name
        assert evaluate_main(["--model", str(exported["export"]), *source, "--out", str(out), "--no_tb",
                              "--probes", "full,only_text"]) == 0
        results[name] = json.loads((out / "results.json").read_text())
    assert "prompt truncation" in capsys.readouterr().out
    assert results["raw"] == results["stream"]
