"""GradCache: the contrastive loss of a large batch with the activation memory of a small chunk.

In-batch contrastive learning wants many negatives, i.e. a large batch, but activation memory grows with the batch.
Gradient accumulation does not help (each micro-batch only sees its own negatives). GradCache (Gao et al., 2021)
splits the step in two:

1. **Embed** the whole batch chunk by chunk *without* a graph, keeping only the embeddings ``(2B, d)``.
2. **Loss** on the detached embeddings: the exact full-batch loss (mICL weighting, cross-device gather with
   gradients, same-note masking); one backward gives ``g = dL/de`` for every embedding and ``dL/dtau``.
3. **Re-encode** each chunk *with* a graph and backprop the cached ``g`` through it (``(e * g).sum()``); parameter
   gradients accumulate over the chunks. The result equals the plain large-batch gradient.

Cost: one extra forward (about +33 % compute); memory: one chunk's activations plus ``2B x d`` floats.

Randomness: the re-encoding must reproduce step 1's forward exactly. The CPU (and current CUDA device) RNG state is
saved before each chunk's first forward and restored before its re-encoding, so dropout masks match. Other sources
of nondeterminism (non-deterministic CUDA kernels) make the replay approximate, not wrong.

Distributed: under DDP the chunks but the last backprop inside ``no_sync()``; the last one is synchronised and
carries ``dL/dtau`` too, so every trainable parameter is all-reduced once per step (as with gradient accumulation).
Every trainable parameter must be used in each chunk's graph (true for NoteLLM-2), or DDP needs
``find_unused_parameters``. DeepSpeed is refused (its engine owns backward and accumulation boundaries); FSDP uses the
same ``no_sync`` path but is untested.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lightning as L
import torch

from notellm2_pl.data.schema import NoteBatch

if TYPE_CHECKING:  # the module imports this file at run time
    from notellm2_pl.training.module import NoteLLM2Module

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ helpers
def split_batch(batch: NoteBatch, chunk: int) -> list[NoteBatch]:
    """Slice every per-note entry of a batch (tensors and lists with ``B`` rows) into chunks of ``chunk`` notes.

    Padding is kept as it is (chunks share the batch's padded length), so a chunk's forward sees the same inputs as
    the full batch's rows.
    """
    if chunk < 1:
        raise ValueError(f"grad_cache_chunk must be >= 1, got {chunk}.")
    n = batch["input_ids"].shape[0]
    out = []
    for start in range(0, n, chunk):
        end = min(n, start + chunk)
        out.append({k: (v[start:end] if _is_rows(v, n) else v) for k, v in batch.items()})
    return out


def _is_rows(v: Any, n: int) -> bool:
    return (isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n) or (isinstance(v, list) and len(v) == n)


@dataclass
class RngState:
    """CPU and (when used) CUDA RNG state, captured before a chunk's first forward and restored for its replay."""

    cpu: torch.Tensor
    cuda: torch.Tensor | None
    device: torch.device

    @classmethod
    def capture(cls, device: torch.device) -> RngState:
        """The current CPU RNG state, and ``device``'s CUDA RNG state when it is a GPU."""
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda, device)

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block with this RNG state, then put the generators back where they were."""
        devices = [self.device] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices, device_type=self.device.type):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


@dataclass
class _Cached:
    """Detached outputs of the no-grad pass over all chunks."""

    e_m: torch.Tensor  # (2B, d)
    e_v: torch.Tensor | None  # (2B, d)
    gate: torch.Tensor | None  # (2B, H)
    rng: list[RngState]


def _embed_no_grad(module: NoteLLM2Module, chunks: list[NoteBatch]) -> _Cached:
    e_m, e_v, gates, rng = [], [], [], []
    for c in chunks:
        rng.append(RngState.capture(c["input_ids"].device))
        with torch.no_grad():
            out = module(c)
        e_m.append(out.e_m)
        if out.e_v is not None:
            e_v.append(out.e_v)
        if out.gate is not None:
            gates.append(out.gate)
    return _Cached(torch.cat(e_m), torch.cat(e_v) if e_v else None, torch.cat(gates) if gates else None, rng)


def _ddp_no_sync(module: NoteLLM2Module) -> Callable[[], contextlib.AbstractContextManager]:
    """``model.no_sync`` of the strategy's wrapper (DDP/FSDP) when there is one, else a null context."""
    trainer = getattr(module, "_trainer", None)
    wrapper = getattr(getattr(trainer, "strategy", None), "model", None) if trainer is not None else None
    if wrapper is not None and wrapper is not module and hasattr(wrapper, "no_sync"):
        return wrapper.no_sync
    return contextlib.nullcontext


def check_strategy(trainer: L.Trainer) -> None:
    """Refuse strategies GradCache cannot run under."""
    strategy = type(getattr(trainer, "strategy", None)).__name__
    if "DeepSpeed" in strategy:
        raise ValueError("model.grad_cache_chunk does not work with DeepSpeed (its engine owns backward and "
                         "gradient-accumulation boundaries). Use --trainer.strategy ddp or fsdp, or unset "
                         "model.grad_cache_chunk and raise the per-device batch instead.")


# ------------------------------------------------------------------------------------------------ the step
def grad_cache_backward(
    module: NoteLLM2Module,
    batch: NoteBatch,
    chunk: int,
    backward: Callable[[torch.Tensor], None] | None = None,
    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
    verify: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Accumulate the gradient of ``module``'s full-batch contrastive loss into ``.grad``, chunk by chunk.

    Args:
        module: A ``NoteLLM2Module`` (anything with ``forward(batch) -> EncoderOutput``, ``tau`` and
            ``loss_from_output(out, ids, logit_scale)``).
        batch: The local batch of ``2B`` notes, ``[queries; targets]``.
        chunk: Notes per chunk (any size; need not divide ``2B``).
        backward: How to backprop a scalar (``module.manual_backward`` in a Trainer; default ``Tensor.backward``).
        no_sync: Context factory that suppresses gradient all-reduce (DDP ``no_sync``); default: from the
            module's strategy, or none.
        verify: Check that every re-encoding reproduces the cached embeddings (debugging dropout/RNG issues).

    Returns:
        The loss (detached) and its parts, as ``NoteLLM2Module.compute_loss`` returns them.
    """
    backward = backward or (lambda t: t.backward())
    no_sync = no_sync or _ddp_no_sync(module)
    chunks = split_batch(batch, chunk)
    cached = _embed_no_grad(module, chunks)

    # full-batch loss on leaf copies: gradients w.r.t. the embeddings and tau, nothing else
    e_m = cached.e_m.detach().requires_grad_(True)
    e_v = cached.e_v.detach().requires_grad_(True) if cached.e_v is not None else None
    tau = module.tau.detach().requires_grad_(module.tau.requires_grad)
    out = _Out(e_m, e_v, cached.gate)
    loss, parts = module.loss_from_output(out, batch["note_hash"], logit_scale=tau.exp(),
                                          negatives=batch.get("num_negatives", 0))
    leaves = [x for x in (e_m, e_v, tau) if x is not None and x.requires_grad]
    grads = dict(zip([id(x) for x in leaves], torch.autograd.grad(loss, leaves)))
    g_m, g_v = grads[id(e_m)], grads.get(id(e_v)) if e_v is not None else None
    g_tau = grads.get(id(tau))

    # re-encode each chunk with a graph and push the cached gradients through it
    start = 0
    for i, (c, rng) in enumerate(zip(chunks, cached.rng)):
        last = i == len(chunks) - 1
        n = c["input_ids"].shape[0]
        with rng.replay():
            o = module(c)
        if verify:
            torch.testing.assert_close(o.e_m.detach(), cached.e_m[start:start + n], atol=1e-5, rtol=1e-4)
        surrogate = (o.e_m * g_m[start:start + n]).sum()
        if g_v is not None:
            surrogate = surrogate + (o.e_v * g_v[start:start + n]).sum()
        if last and g_tau is not None:
            surrogate = surrogate + module.tau * g_tau  # (scalar) in the synchronised backward
        with contextlib.nullcontext() if last else no_sync():
            backward(surrogate)
        start += n
    return loss.detach(), {k: v.detach() for k, v in parts.items()}


@dataclass
class _Out:
    """The fields of ``EncoderOutput`` the loss reads."""

    e_m: torch.Tensor
    e_v: torch.Tensor | None
    gate: torch.Tensor | None


def grad_cache_training_step(module: NoteLLM2Module, batch: NoteBatch) -> torch.Tensor:
    """One manual-optimisation step of ``NoteLLM2Module`` with GradCache: backward, clip, step, schedule, log."""
    check_strategy(module.trainer)
    opt = module.optimizers()
    sched = module.lr_schedulers()
    opt.zero_grad()
    loss, parts = grad_cache_backward(module, batch, int(module.hparams.grad_cache_chunk),
                                      backward=module.manual_backward)
    clip = module.hparams.get("manual_clip_val")
    if clip:
        module.clip_gradients(opt, gradient_clip_val=clip, gradient_clip_algorithm="norm")
    opt.step()
    if sched is not None:
        sched.step()
    b = batch["input_ids"].shape[0]
    module.log("train/loss", loss, prog_bar=True, batch_size=b)
    module.log_dict({f"train/{k}": v for k, v in parts.items()}, batch_size=b)
    module.log("train/logit_scale", module.tau.detach().exp(), batch_size=b)
    return loss
