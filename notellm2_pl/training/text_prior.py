"""Give a tiny LLM text priors: train a byte-level BPE tokenizer and a few minutes of causal-LM pretraining.

Why: image neglect (the effect NoteLLM-2 fixes) shows up when the LLM already "reads" text well. A random-init
tiny LLM has no such prior, so the demo pretrains one on the corpus text first (docs/design.md#data)::

    python -m notellm2_pl pretrain-text --data data/demo --out checkpoints/text_prior

The result is an ordinary Hugging Face checkpoint directory (``config.json``, ``model.safetensors``, tokenizer
files, plus ``text_prior.json`` with the settings and the loss curve) that the HF LLM backbone loads with
``pretrained: checkpoints/text_prior``.

Training regime: packed sequences (``<s> text </s>`` concatenated and cut into ``seq_len`` blocks), AdamW,
linear warmup then cosine decay to 10 % of ``lr`` over ``max_steps``, fp32 on CPU. The default bound is a number of
steps, so the prior is the same on a fast and a slow machine; an optional wall-clock bound (``max_minutes``) makes
progress the larger of steps/max_steps and time/max_minutes (the schedule completes whichever bound stops training),
at the price of a prior that depends on the machine's speed.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
META_FILE = "text_prior.json"

#: Default tiny LLM: Qwen2-shaped, ~1.3 M non-embedding parameters (+ vocab x 192 tied embeddings); ~0.3 s per
#: 16x128-token training step on 2 idle CPU cores.
DEFAULT_CONFIG: dict[str, Any] = {
    "model_type": "qwen2",
    "hidden_size": 192,
    "intermediate_size": 512,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
}
DEFAULT_VOCAB_SIZE = 6000
#: 160 steps (~330 k tokens, under a minute on 2 idle cores): held-out loss 1.45, as strong as the prior behind the
#: figures in docs/ablations.md and docs/results.md (1.42; 131 steps that a 3-minute bound of earlier versions allowed
#: on 2 shared cores). A step bound keeps the prior the same on every machine.
DEFAULT_MAX_STEPS = 160
DEFAULT_MAX_MINUTES: float | None = None


# --------------------------------------------------------------------------------------------------- tokenizer
def train_tokenizer(texts: Sequence[str], vocab_size: int = DEFAULT_VOCAB_SIZE, model_max_length: int = 512) -> Any:
    """Train a byte-level BPE tokenizer on ``texts`` (any script: Chinese, English, emoji; nothing is ever unknown).

    The tokenizer adds ``<s>`` in front of every encoded text (as Llama does; ``add_special_tokens=False`` turns it
    off) and never appends ``</s>``. No normalisation is applied, so full-width punctuation stays as written.

    Args:
        texts: Training texts.
        vocab_size: Upper bound on the vocabulary (a small corpus may yield fewer tokens).
        model_max_length: Recorded as the tokenizer's ``model_max_length``.

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with bos ``<s>``, eos ``</s>``, pad ``<pad>``, unk ``<unk>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if not texts:
        raise ValueError("train_tokenizer needs at least one text.")
    specials = [BOS, EOS, PAD, UNK]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )


# ------------------------------------------------------------------------------------------------------ config
def resolve_config(config: dict[str, Any] | str | None) -> dict[str, Any] | str:
    """Normalise ``config`` to a dict (with ``model_type``) or a path / hub id for ``AutoConfig.from_pretrained``.

    Args:
        config: ``None`` (:data:`DEFAULT_CONFIG`), a dict with ``model_type``, a JSON string, a path to a JSON file,
            or a directory / hub id holding a ``config.json``.
    """
    if config is None:
        return copy.deepcopy(DEFAULT_CONFIG)
    if isinstance(config, dict):
        config = copy.deepcopy(config)
    elif config.lstrip().startswith("{"):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as err:
            raise ValueError(f"--config looks like JSON but does not parse: {err}. Quote it: --config '{{...}}'") from err
    elif Path(config).is_file():
        config = json.loads(Path(config).read_text())
    else:
        return config  # a directory or hub id: AutoConfig.from_pretrained decides
    if "model_type" not in config:
        raise ValueError(
            f"Config {config} has no 'model_type'. Add one, e.g. {{\"model_type\": \"qwen2\", ...}} or "
            f"{{\"model_type\": \"llama\", ...}}."
        )
    return config


def build_config(config: dict[str, Any] | str | None, tokenizer: Any, seq_len: int) -> Any:
    """Build the ``transformers`` config, with vocabulary size and special-token ids taken from ``tokenizer``."""
    from transformers import AutoConfig

    resolved = resolve_config(config)
    if isinstance(resolved, dict):
        kwargs = dict(resolved)
        cfg = AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
    else:
        cfg = AutoConfig.from_pretrained(resolved)
    cfg.vocab_size = len(tokenizer)
    cfg.bos_token_id = tokenizer.bos_token_id
    cfg.eos_token_id = tokenizer.eos_token_id
    cfg.pad_token_id = tokenizer.pad_token_id
    max_pos = getattr(cfg, "max_position_embeddings", None)
    if max_pos is not None and max_pos < seq_len:
        raise ValueError(f"seq_len={seq_len} exceeds the config's max_position_embeddings={max_pos}; lower --seq-len.")
    return cfg


# -------------------------------------------------------------------------------------------------------- data
def _pack(texts: Sequence[str], tokenizer: Any, seq_len: int) -> Any:
    """``<s> text </s>`` for every text, concatenated and cut into ``(N, seq_len)`` blocks (tail dropped)."""
    import torch

    enc = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    stream: list[int] = []
    for ids in enc:
        stream.extend([tokenizer.bos_token_id, *ids, tokenizer.eos_token_id])
    n_blocks = len(stream) // seq_len
    if n_blocks == 0:  # fewer tokens than one block: repeat the stream
        stream = stream * (seq_len // max(len(stream), 1) + 1)
        n_blocks = 1
    return torch.tensor(stream[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)  # (N, seq_len)


def texts_fingerprint(texts: Sequence[str]) -> str:
    """Short SHA-256 over the texts (order-sensitive), stored with the checkpoint's settings."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def _lr_at(progress: float, step: int, warmup: int, lr: float) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def _eval_loss(model: Any, blocks: Any, batch_size: int) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(blocks), batch_size):
            x = blocks[i : i + batch_size]
            total += model(input_ids=x, labels=x, use_cache=False).loss.item() * len(x)
            count += len(x)
    model.train()
    return total / max(count, 1)


# ---------------------------------------------------------------------------------------------------- training
def pretrain_text_prior(
    texts: Sequence[str],
    out_dir: str | Path,
    config: dict[str, Any] | str | None = None,
    tokenizer: Any = None,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    max_steps: int = DEFAULT_MAX_STEPS,
    max_minutes: float | None = DEFAULT_MAX_MINUTES,
    batch_size: int = 16,
    seq_len: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    seed: int = 0,
    overwrite: bool = False,
    extra_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a causal LM from ``config`` on ``texts`` for a bounded time on CPU (fp32) and save it to ``out_dir``.

    The directory is written atomically (a temporary sibling directory renamed into place), so an interrupted run
    never leaves a half-written checkpoint that looks finished.

    Args:
        texts: Training texts (notes rendered as "title topics content").
        out_dir: Output checkpoint directory (``save_pretrained`` layout plus ``text_prior.json``).
        config: Any HF causal-LM config: a dict with ``model_type`` (``qwen2``, ``llama``, ...), a JSON string, a path
            to a JSON file, or a directory / hub id. ``None``: :data:`DEFAULT_CONFIG`. ``vocab_size`` and the special
            token ids are always taken from the tokenizer.
        tokenizer: A ``transformers`` tokenizer or a path/hub id to load one; ``None`` trains a byte-level BPE on
            ``texts`` with :func:`train_tokenizer`.
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
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists. Pass overwrite=True (CLI: --overwrite) or another --out.")
    if not texts:
        raise ValueError("No training texts. Check the data root (it must hold training notes).")
    texts = [t for t in texts if t.strip()]
    settings = {
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
        **(extra_settings or {}),
    }
    random.seed(seed)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    if tokenizer is None:
        tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
        log.info("Trained a byte-level BPE tokenizer: %d tokens (%.1f s)", len(tokenizer), time.perf_counter() - t0)
    elif isinstance(tokenizer, str):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("The tokenizer needs bos and eos tokens; pass tokenizer=None to train one on the texts.")

    cfg = build_config(config, tokenizer, seq_len)
    model = AutoModelForCausalLM.from_config(cfg).float()
    model.train()
    n_params = sum(p.numel() for p in model.parameters())

    # Hold out ~5 % of the texts (at most 200) for a before/after loss, when there are enough of them.
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n_eval = min(200, len(texts) // 20) if len(texts) >= 40 else 0
    eval_texts = [texts[i] for i in order[:n_eval]]
    train_texts = [texts[i] for i in order[n_eval:]]
    blocks = _pack(train_texts, tokenizer, seq_len)  # (N, seq_len)
    eval_blocks = _pack(eval_texts, tokenizer, seq_len)[:64] if eval_texts else None
    log.info(
        "Text prior: %s, %.2f M params, %d train blocks of %d tokens, %d steps%s",
        cfg.model_type, n_params / 1e6, len(blocks), seq_len, max_steps,
        "" if max_minutes is None else f" at most, or {max_minutes:.1f} min",
    )

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name or "embed" in name else decay).append(p)
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95),
    )
    eval_start = _eval_loss(model, eval_blocks, batch_size) if eval_blocks is not None else None
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
        idx = perm[cursor : cursor + batch_size]
        cursor += batch_size
        x = blocks[idx]  # (B, seq_len)
        progress = max(step / max_steps, elapsed / max_seconds)
        for group in optim.param_groups:
            group["lr"] = _lr_at(progress, step, warmup, lr)
        loss = model(input_ids=x, labels=x, use_cache=False).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        losses.append(loss.item())
        step += 1
        if step % 50 == 0:
            log.info("step %d  loss %.3f  %.0f s", step, sum(losses[-50:]) / len(losses[-50:]), elapsed)
    train_seconds = time.perf_counter() - t_train
    eval_end = _eval_loss(model, eval_blocks, batch_size) if eval_blocks is not None else None

    stats = {
        "first_loss": losses[0] if losses else None,
        "last_loss": sum(losses[-10:]) / len(losses[-10:]) if losses else None,
        "eval_loss_start": eval_start,
        "eval_loss_end": eval_end,
        "steps": step,
        "seconds": round(train_seconds, 2),
        "total_seconds": round(time.perf_counter() - t0, 2),
        "tokens_seen": step * batch_size * seq_len,
        "params": n_params,
        "vocab_size": len(tokenizer),
        "model_type": cfg.model_type,
    }
    every = max(1, len(losses) // 100)
    curve = [[i + 1, round(sum(losses[i : i + every]) / len(losses[i : i + every]), 4)]
             for i in range(0, len(losses), every)]
    _save_atomically(model, tokenizer, out_dir, {"settings": settings, "stats": stats, "loss_curve": curve})
    stats["out_dir"] = str(out_dir)
    log.info("Text prior saved to %s: loss %.3f -> %.3f in %d steps (%.0f s)",
             out_dir, stats["first_loss"] or float("nan"), stats["last_loss"] or float("nan"), step, train_seconds)
    return stats


def _save_atomically(model: Any, tokenizer: Any, out_dir: Path, meta: dict[str, Any]) -> None:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=1, ensure_ascii=False))  # written last: marks "finished"
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def finished_settings(out_dir: str | Path) -> dict[str, Any] | None:
    """Settings of the finished text prior in ``out_dir``, or ``None`` if there is none."""
    meta = Path(out_dir) / META_FILE
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text())["settings"]
    except (json.JSONDecodeError, KeyError):
        return None


# ---------------------------------------------------------------------------------------------------------- CLI
def note_texts(root: str | Path) -> list[str]:
    """Training-note texts of a dataset, each as ``"title topics content"`` (topics space-separated)."""
    from notellm2_pl.data.tables import load_split

    split = load_split(root, "train", on_error="skip")
    texts = []
    for note in split.notes.values():
        text = " ".join(part for part in (note.title.strip(), " ".join(note.topics).strip(), note.content.strip()) if part)
        if text:
            texts.append(text)
    return texts


def build_parser(prog: str = "python -m notellm2_pl pretrain-text") -> argparse.ArgumentParser:
    """Argument parser of the ``pretrain-text`` command."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Give a tiny LLM text priors: train a byte-level BPE tokenizer on the training notes, then a "
        "bounded causal-LM pretraining run on CPU (fp32). Writes a Hugging Face checkpoint directory that the "
        "HF LLM backbone loads with `pretrained: OUT`.",
        epilog="Example: python -m notellm2_pl pretrain-text --data data/demo --out checkpoints/text_prior "
        "--max-minutes 3",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", required=True, help="dataset root (canonical or official NoteLLM layout); train notes")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--config", default=None,
                   help="HF causal-LM config: JSON string with model_type, path to a JSON file, or a directory / hub "
                   f"id with config.json. Default: {json.dumps(DEFAULT_CONFIG)}")
    p.add_argument("--tokenizer", default=None, help="existing tokenizer (path / hub id); default: train one")
    p.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE, help="BPE vocabulary bound")
    p.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS, help="optimiser steps (default: %(default)s)")
    p.add_argument("--max-minutes", type=float, default=DEFAULT_MAX_MINUTES,
                   help="optional wall-clock bound; the prior then depends on the machine's speed (default: none)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per packed sequence")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return p


def cli_main(argv: list[str] | None = None) -> int:
    """Run ``pretrain-text``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    texts = note_texts(args.data)
    settings_probe = {
        "config": resolve_config(args.config),
        "tokenizer": args.tokenizer or "trained",
        "vocab_size": args.vocab_size,
        "max_steps": args.max_steps,
        "max_minutes": args.max_minutes,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "lr": args.lr,
        "seed": args.seed,
        "texts_sha256": texts_fingerprint([t for t in texts if t.strip()]),
    }
    existing = finished_settings(args.out)
    if existing is not None and not args.overwrite:
        if all(existing.get(k) == v for k, v in settings_probe.items()):
            print(f"{args.out} already holds a finished text prior with these settings; skipping "
                  f"(pass --overwrite to retrain).")
            return 0
        print(f"{args.out} holds a text prior trained with different settings. Pass --overwrite to replace it, "
              f"or choose another --out.")
        return 2
    if Path(args.out).exists() and existing is None and not args.overwrite:
        print(f"{args.out} exists but is not a finished text prior. Pass --overwrite or choose another --out.")
        return 2
    stats = pretrain_text_prior(
        texts, args.out, config=args.config, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
        max_steps=args.max_steps, max_minutes=args.max_minutes, batch_size=args.batch_size, seq_len=args.seq_len,
        lr=args.lr, seed=args.seed, overwrite=True, extra_settings={"data": str(args.data)},
    )
    print(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
