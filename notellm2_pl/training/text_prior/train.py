"""The text-prior run: causal-LM pretraining of a tiny LLM on CPU, saved as a finished checkpoint directory.

Training regime: packed sequences (``<s> text </s>`` concatenated and cut into ``seq_len`` blocks), AdamW,
linear warmup then cosine decay to 10 % of ``lr`` over ``max_steps``, fp32 on CPU. The default bound is a number of
steps, so the prior is the same on a fast and a slow machine; an optional wall-clock bound (``max_minutes``) makes
progress the larger of steps/max_steps and time/max_minutes (the schedule completes whichever bound stops training),
at the price of a prior that depends on the machine's speed.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from notellm2_pl.atomic import atomic_dir
from notellm2_pl.training.optim import decay_groups
from notellm2_pl.training.text_prior.config import build_config, resolve_config
from notellm2_pl.training.text_prior.corpus import held_out_split, pack, texts_fingerprint
from notellm2_pl.training.text_prior.tokenizer import DEFAULT_VOCAB_SIZE, prepare_tokenizer

log = logging.getLogger(__name__)

META_FILE = "text_prior.json"
#: 160 steps (~330 k tokens, under a minute on 2 idle cores): held-out loss 1.45, as strong as the prior behind the
#: figures in docs/ablations.md and docs/results.md (1.42; 131 steps that a 3-minute bound of earlier versions allowed
#: on 2 shared cores). A step bound keeps the prior the same on every machine.
DEFAULT_MAX_STEPS = 160
DEFAULT_MAX_MINUTES: float | None = None
#: Settings that must match for a finished prior to be reused instead of retrained.
REUSE_KEYS = ("config", "tokenizer", "vocab_size", "max_steps", "max_minutes", "batch_size", "seq_len", "lr", "seed",
              "texts_sha256")


@dataclass
class _Run:
    """What the training loop produced."""

    losses: list[float]
    steps: int
    seconds: float


def prior_settings(texts: Sequence[str], config: dict[str, Any] | str | None = None, tokenizer: Any = None,
                   vocab_size: int = DEFAULT_VOCAB_SIZE, max_steps: int = DEFAULT_MAX_STEPS,
                   max_minutes: float | None = DEFAULT_MAX_MINUTES, batch_size: int = 16, seq_len: int = 128,
                   lr: float = 2e-3, weight_decay: float = 0.01, seed: int = 0) -> dict[str, Any]:
    """The settings a prior is trained with, as stored in ``text_prior.json``.

    Arguments as :func:`pretrain_text_prior`; blank texts are left out, as there.
    """
    texts = [t for t in texts if t.strip()]
    return {
        "config": resolve_config(config),
        "tokenizer": tokenizer if isinstance(tokenizer, str) else ("trained" if tokenizer is None else "given"),
        "vocab_size": vocab_size,
        "max_steps": max_steps,
        "max_minutes": max_minutes,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "lr": lr,
        "weight_decay": weight_decay,
        "seed": seed,
        "num_texts": len(texts),
        "texts_sha256": texts_fingerprint(texts),
    }


def pretrain_text_prior(texts: Sequence[str], out_dir: str | Path, config: dict[str, Any] | str | None = None,
                        tokenizer: Any = None, vocab_size: int = DEFAULT_VOCAB_SIZE, max_steps: int = DEFAULT_MAX_STEPS,
                        max_minutes: float | None = DEFAULT_MAX_MINUTES, batch_size: int = 16, seq_len: int = 128,
                        lr: float = 2e-3, weight_decay: float = 0.01, seed: int = 0, overwrite: bool = False,
                        extra_settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train a causal LM from ``config`` on ``texts`` for a bounded time on CPU (fp32) and save it to ``out_dir``.

    The directory is written atomically (:func:`notellm2_pl.atomic.atomic_dir`), so an interrupted run never
    leaves a half-written checkpoint that looks finished.

    Args:
        texts: Training texts (notes rendered as "title topics content").
        out_dir: Output checkpoint directory (``save_pretrained`` layout plus ``text_prior.json``).
        config: Any HF causal-LM config: a dict with ``model_type`` (``qwen2``, ``llama``, ...), a JSON string, a path
            to a JSON file, or a directory / hub id. ``None``: the default tiny Qwen2. ``vocab_size`` and the special
            token ids are always taken from the tokenizer.
        tokenizer: A ``transformers`` tokenizer or a path/hub id to load one; ``None`` trains a byte-level BPE on
            ``texts``.
        vocab_size: Vocabulary bound for the trained tokenizer (ignored when ``tokenizer`` is given).
        max_steps: Optimiser steps at most.
        max_minutes: Optional wall-clock bound on the training loop, in minutes (None: steps only, reproducible).
        batch_size: Sequences per step.
        seq_len: Tokens per packed sequence.
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay (not applied to biases, norms, embeddings).
        seed: Seed for initialisation and batch order.
        overwrite: Replace an existing ``out_dir``.
        extra_settings: Stored with the settings in ``text_prior.json`` (e.g. the data root).

    Returns:
        Stats: ``first_loss``, ``last_loss`` (mean of the last 10 steps), ``eval_loss_start``/``eval_loss_end`` on
        held-out blocks (when there are enough texts), ``steps``, ``seconds``, ``tokens_seen``, ``out_dir``.
    """
    out_dir, texts = _check_inputs(texts, out_dir, overwrite)
    settings = {**prior_settings(texts, config, tokenizer, vocab_size, max_steps, max_minutes, batch_size, seq_len,
                                 lr, weight_decay, seed), **(extra_settings or {})}
    random.seed(seed)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    tokenizer = prepare_tokenizer(tokenizer, texts, vocab_size)
    model = _build_model(config, tokenizer, seq_len)
    n_params = sum(p.numel() for p in model.parameters())
    blocks, eval_blocks = _blocks(texts, tokenizer, seq_len, seed)
    log.info("Text prior: %s, %.2f M params, %d train blocks of %d tokens, %d steps%s", model.config.model_type,
             n_params / 1e6, len(blocks), seq_len, max_steps,
             "" if max_minutes is None else f" at most, or {max_minutes:.1f} min")
    stats, losses = _train_and_evaluate(model, blocks, eval_blocks, batch_size, max_steps, max_minutes, lr,
                                        weight_decay, seed)
    stats.update(total_seconds=round(time.perf_counter() - t0, 2), tokens_seen=stats["steps"] * batch_size * seq_len,
                 params=n_params, vocab_size=len(tokenizer), model_type=model.config.model_type)
    _save(model, tokenizer, out_dir, {"settings": settings, "stats": stats, "loss_curve": _loss_curve(losses)})
    stats["out_dir"] = str(out_dir)
    log.info("Text prior saved to %s: loss %.3f -> %.3f in %d steps (%.0f s)", out_dir,
             stats["first_loss"] or float("nan"), stats["last_loss"] or float("nan"), stats["steps"], stats["seconds"])
    return stats


def _check_inputs(texts: Sequence[str], out_dir: str | Path, overwrite: bool) -> tuple[Path, list[str]]:
    """The output directory as a Path and the non-blank texts; refuses an existing output and an empty corpus."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists. Pass overwrite=True (CLI: --overwrite) or another --out.")
    if not texts:
        raise ValueError("No training texts. Check the data root (it must hold training notes).")
    return out_dir, [t for t in texts if t.strip()]


def _build_model(config: dict[str, Any] | str | None, tokenizer: Any, seq_len: int) -> Any:
    """A freshly initialised fp32 causal LM of ``config``, sized to the tokenizer, in train mode."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(build_config(config, tokenizer, seq_len)).float()
    model.train()
    return model


def _blocks(texts: list[str], tokenizer: Any, seq_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Packed training blocks ``(N, seq_len)`` and at most 64 held-out blocks (None without a held-out split)."""
    train_texts, eval_texts = held_out_split(texts, seed)
    blocks = pack(train_texts, tokenizer, seq_len)  # (N, seq_len)
    return blocks, (pack(eval_texts, tokenizer, seq_len)[:64] if eval_texts else None)


def _train_and_evaluate(model: Any, blocks: torch.Tensor, eval_blocks: torch.Tensor | None, batch_size: int,
                        max_steps: int, max_minutes: float | None, lr: float, weight_decay: float,
                        seed: int) -> tuple[dict[str, Any], list[float]]:
    """Held-out loss, training, held-out loss again: ``(stats, per-step losses)``."""
    optim = torch.optim.AdamW(decay_groups(model.named_parameters(), weight_decay, extra_words=("embed",)),
                              lr=lr, betas=(0.9, 0.95))
    eval_start = _eval_loss(model, eval_blocks, batch_size) if eval_blocks is not None else None
    run = _train(model, optim, blocks, batch_size, max_steps, max_minutes, lr, seed)
    eval_end = _eval_loss(model, eval_blocks, batch_size) if eval_blocks is not None else None
    stats = {**_loss_stats(run.losses), "eval_loss_start": eval_start, "eval_loss_end": eval_end,
             "steps": run.steps, "seconds": round(run.seconds, 2)}
    return stats, run.losses


def _lr_at(progress: float, step: int, warmup: int, lr: float) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to 10 % of ``lr`` at ``progress`` 1."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def _train(model: Any, optim: torch.optim.Optimizer, blocks: torch.Tensor, batch_size: int, max_steps: int,
           max_minutes: float | None, lr: float, seed: int) -> _Run:
    """The training loop: shuffled blocks, one clipped AdamW step each, until the step (or time) bound."""
    warmup = max(1, min(20, max_steps // 20))
    max_seconds = math.inf if max_minutes is None else max_minutes * 60.0
    gen = torch.Generator().manual_seed(seed)
    perm, cursor = torch.randperm(len(blocks), generator=gen), 0
    losses: list[float] = []
    t_train = time.perf_counter()
    step = 0
    while step < max_steps:
        elapsed = time.perf_counter() - t_train
        if elapsed >= max_seconds:
            break
        if cursor + batch_size > len(perm):
            perm, cursor = torch.randperm(len(blocks), generator=gen), 0
        x = blocks[perm[cursor : cursor + batch_size]]  # (B, seq_len)
        cursor += batch_size
        for group in optim.param_groups:
            group["lr"] = _lr_at(max(step / max_steps, elapsed / max_seconds), step, warmup, lr)
        loss = model(input_ids=x, labels=x, use_cache=False).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        losses.append(loss.item())
        step += 1
        if step % 50 == 0:
            log.info("step %d  loss %.3f  %.0f s", step, sum(losses[-50:]) / len(losses[-50:]), elapsed)
    return _Run(losses, step, time.perf_counter() - t_train)


def _eval_loss(model: Any, blocks: torch.Tensor, batch_size: int) -> float:
    """Mean causal-LM loss over ``blocks`` (eval mode, no gradients)."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(blocks), batch_size):
            x = blocks[i : i + batch_size]  # (b, seq_len)
            total += model(input_ids=x, labels=x, use_cache=False).loss.item() * len(x)
            count += len(x)
    model.train()
    return total / max(count, 1)


def _loss_stats(losses: list[float]) -> dict[str, float | None]:
    """First loss and the mean of the last 10."""
    return {"first_loss": losses[0] if losses else None,
            "last_loss": sum(losses[-10:]) / len(losses[-10:]) if losses else None}


def _loss_curve(losses: list[float]) -> list[list[float]]:
    """At most ~100 ``[step, mean loss]`` points."""
    every = max(1, len(losses) // 100)
    return [[i + 1, round(sum(losses[i : i + every]) / len(losses[i : i + every]), 4)]
            for i in range(0, len(losses), every)]


def _save(model: Any, tokenizer: Any, out_dir: Path, meta: dict[str, Any]) -> None:
    """Model, tokenizer and ``text_prior.json`` (written last: it marks the directory finished), atomically."""
    with atomic_dir(out_dir, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1, ensure_ascii=False))


def finished_settings(out_dir: str | Path) -> dict[str, Any] | None:
    """Settings of the finished text prior in ``out_dir``, or ``None`` if there is none."""
    meta = Path(out_dir) / META_FILE
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text())["settings"]
    except (json.JSONDecodeError, KeyError):
        return None
