"""Real 2-process DDP (gloo, CPU): the gathered loss and the averaged gradients equal the single-process run.

Each rank runs the module's own loss path (``compute_loss`` -> ``_gathered_loss`` -> ``all_gather(sync_grads=True)``)
on its half of the global batch, inside a real ``DistributedDataParallel`` wrapper with a real Lightning
``DDPStrategy`` doing the gather; backward goes through Lightning's manual-backward preparation of the DDP reducer
(``prepare_for_backward``), so the gradient all-reduce is DDP's own. The GradCache path runs the same way (chunks
under ``no_sync``, the last one synchronised). Both must match one process holding the whole global batch.
"""

from __future__ import annotations

import gc
import os
import socket
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _scale_helpers import assert_grads_close, collate_pair_notes, grads, make_ckpts, make_pairs, tiny_module

WORLD = 2
PAIRS_PER_RANK = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, ckpts: dict[str, str], img_dir: str, state_path: str, out_path: str) -> None:
    """One rank. Teardown rule: nothing may hold the process group when it is destroyed, and no rank may destroy it
    while the other still uses it.

    The DDP wrapper's Reducer keeps the gloo process group (and its worker threads) alive, and the wrapper sits in a
    reference cycle (module._trainer -> strategy -> wrapper -> module), so without an explicit collection it dies at
    some later garbage collection or at interpreter exit, after ``destroy_process_group`` and possibly after the
    peer has exited: gloo's threads are then torn down in an undefined order and the process can abort (SIGABRT,
    "terminate called without an active exception"). So: the rank's work runs in its own function, its objects are
    collected (checked), both ranks meet at a barrier, and only then is the group destroyed.
    """
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        result, wrapper = _run_rank(rank, ckpts, img_dir, state_path)
        if rank == 0:
            torch.save(result, out_path)
        gc.collect()
        assert wrapper() is None, "the DDP wrapper (and its Reducer) must be gone before the group is destroyed"
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _run_rank(rank: int, ckpts: dict[str, str], img_dir: str,
              state_path: str) -> tuple[dict[str, torch.Tensor], weakref.ref]:
    """Loss and gradients of one rank, plain and GradCache; also a weak reference to the DDP wrapper."""
    from lightning.pytorch.overrides.distributed import prepare_for_backward
    from lightning.pytorch.strategies import DDPStrategy
    from torch.nn.parallel import DistributedDataParallel

    from notellm2_pl.training.gradcache import grad_cache_backward

    module = tiny_module(ckpts).eval()
    module.load_state_dict(torch.load(state_path))
    pairs = make_pairs(Path(img_dir), WORLD * PAIRS_PER_RANK)
    batch = collate_pair_notes(module, pairs[rank * PAIRS_PER_RANK:(rank + 1) * PAIRS_PER_RANK])
    ddp = DistributedDataParallel(module)
    strategy = DDPStrategy(accelerator="cpu")
    strategy.model = ddp
    module._trainer = SimpleNamespace(world_size=WORLD, global_rank=rank, strategy=strategy)

    def backward(t: torch.Tensor) -> None:  # what LightningModule.manual_backward does under DDP
        prepare_for_backward(ddp, t)
        t.backward()

    result = {}
    loss, _ = module.compute_loss(batch)
    backward(loss)
    result["loss"] = _mean(loss.detach())
    result["grads"] = grads(module)
    module.zero_grad(set_to_none=True)
    loss, _ = grad_cache_backward(module, batch, 3, backward=backward)  # 8 local notes: chunks 3 + 3 + 2
    result["gc_loss"] = _mean(loss)
    result["gc_grads"] = grads(module)
    return result, weakref.ref(ddp)


def _mean(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    dist.all_reduce(x)
    return x / WORLD


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(tmp_path):
    ckpts = make_ckpts(tmp_path / "ckpts")
    module = tiny_module(ckpts).eval()  # eval: dropout off, so both runs draw no masks
    state_path, out_path = str(tmp_path / "state.pt"), str(tmp_path / "ddp.pt")
    torch.save(module.state_dict(), state_path)
    pairs = make_pairs(tmp_path / "images", WORLD * PAIRS_PER_RANK)
    loss_ref, _ = module.compute_loss(collate_pair_notes(module, pairs))  # one process, the whole global batch
    loss_ref.backward()
    g_ref = grads(module)

    mp.spawn(_worker, args=(_free_port(), ckpts, str(tmp_path / "images"), state_path, out_path), nprocs=WORLD,
             join=True)
    res = torch.load(out_path)
    torch.testing.assert_close(res["loss"], loss_ref.detach(), atol=1e-5, rtol=1e-5)
    assert_grads_close(res["grads"], g_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res["gc_loss"], loss_ref.detach(), atol=1e-5, rtol=1e-5)
    assert_grads_close(res["gc_grads"], g_ref, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------------ scale recipes
SCALE = sorted((Path(__file__).resolve().parents[1] / "recipes" / "scale").glob("*.yaml"))


@pytest.mark.parametrize("recipe", SCALE, ids=[p.name for p in SCALE])
def test_scale_recipe_strategy_instantiates(recipe):
    """Header states the global contrastive batch; the strategy parses and builds (FSDP/DeepSpeed can't run here)."""
    import yaml
    from jsonargparse import ArgumentParser
    from lightning.pytorch.strategies import Strategy

    text = recipe.read_text()
    assert text.startswith("#") and "Global contrastive batch = per-device batch x world size" in text
    cfg = yaml.safe_load(text)
    assert cfg["trainer"]["precision"] == "bf16-mixed"
    assert cfg["model"]["llm"]["init_args"]["pretrained"].startswith("Qwen/Qwen2.5-")
    assert cfg["model"]["llm"]["init_args"]["gradient_checkpointing"] is True
    assert cfg["model"]["vision"]["class_path"] == "SiglipVision"
    strategy = cfg["trainer"]["strategy"]
    if isinstance(strategy, str):
        assert strategy == "ddp"
        return
    if "DeepSpeed" in strategy["class_path"]:
        pytest.importorskip("deepspeed")
    parser = ArgumentParser()
    parser.add_argument("--strategy", type=Strategy)
    built = parser.instantiate(parser.parse_object({"strategy": strategy})).strategy
    assert type(built).__name__ == strategy["class_path"].rsplit(".", 1)[-1]
    if "FSDP" in strategy["class_path"]:
        assert built.kwargs["auto_wrap_policy"] is not None


@pytest.mark.slow
def test_ddp_recipe_builds_on_cpu_with_tiny_checkpoints_and_grad_cache(tiny_ckpts, caplog):
    """The DDP recipe instantiates end to end (hub ids -> tiny local checkpoints), GradCache on; bf16 on CPU warns."""
    from notellm2_pl.commands.lightning import build_cli
    from notellm2_pl.training.module import warn_cpu_bf16

    recipe = next(p for p in SCALE if p.name == "ddp_1node.yaml")
    cli = build_cli(["--config", str(recipe), "--trainer.accelerator", "cpu", "--trainer.devices", "1",
                     "--trainer.strategy", "auto", "--trainer.logger", "false", "--trainer.callbacks", "[]",
                     "--trainer.gradient_clip_val", "null", "--model.grad_cache_chunk", "8",
                     "--model.llm.init_args.pretrained", tiny_ckpts["qwen2"],
                     "--model.llm.init_args.gradient_checkpointing", "false",
                     "--model.vision.init_args.pretrained", tiny_ckpts["siglip"],
                     "--model.connector.init_args.hidden_size", "32", "--model.connector.init_args.num_heads", "2",
                     "--model.connector.init_args.intermediate_size", "64", "--model.connector.init_args.num_layers",
                     "2"], run=False)
    assert cli.model.automatic_optimization is False
    assert str(cli.trainer.precision) == "bf16-mixed"
    with caplog.at_level("WARNING"):
        assert warn_cpu_bf16(cli.trainer)
    assert "32-true" in caplog.text
