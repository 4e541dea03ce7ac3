"""Information-flow saliency (docs/method.md#saliency): how much the embedding token draws on the image, per layer.

For every decoder layer ``l`` the saliency matrix is ``I_l = |sum_h A_{h,l} * dL/dA_{h,l}|`` (a ``T x T`` matrix per
note), where ``A`` are the post-softmax attention probabilities and ``L`` is the contrastive loss (docs/method.md#contrastive-loss) on
the multimodal embedding ``e_m`` only (also for mICL models), over batches of training pairs, in eval mode. The
diagonal is zeroed and NaN becomes 0. With ``t`` the embedding token (``EncoderOutput.last_pos``) and ``V`` the image
region, the three flows are::

    S_v = sum_{j in V} I(t, j) / |V|                                   image -> target
    S_t = sum_{j not in V, j < t} I(t, j) / (t - |V|)                  other tokens -> target
    S_o = (sum_{i, j <= t} I(i, j) - |V| S_v - (t - |V|) S_t) / (t (t + 1) / 2 - t)   among all other pairs

Per layer, ``[S_v, S_t, S_o]`` is averaged over all notes and then normalised to sum to 1.

How it is computed (no model code is edited, no optimiser exists): ``NoteEncoder.forward(batch,
output_attentions=True)`` returns the per-layer attention probabilities still in the autograd graph (the
``LLMBackbone`` plugin contract), and ``torch.autograd.grad(loss, attentions)`` gives ``dL/dA``. This is the same as
multiplying ``A`` by a ones tensor that requires grad (the original's instrumentation): that tensor's gradient is
``A * dL/dA``. Parameters are temporarily marked trainable so the attention maps are in the graph even for frozen
models; no parameter gradient is accumulated (``autograd.grad`` only differentiates w.r.t. the attention maps).

Only post-softmax attention is supported: the contract returns probabilities, from which the pre-softmax scores the
original used for LLaMA/OPT (docs/method.md#defects-of-the-original-code (B13)) cannot be recovered exactly (they are defined up to a per-row shift).

The image region ``V`` comes from tracked positions (``EncoderOutput.image_span``, end exclusive), never from magic
offsets:

- ``replace`` splicing (Llama style): the visual tokens ``[start, end)``.
- ``insert`` splicing (Qwen style): the visual tokens plus the open/close tag tokens around them.
- mICL: from the first image token (its open tag in insert mode) to the end of the image-compression segment: the
  read-out token ``pos_v``, the marker at ``pos_v + 1`` and the tokens that close the segment (``".`` in the ``en``
  template, ``”。`` in ``zh``), counted per note by decoding the tokens after the marker until that closing text is
  covered. With the original Qwen tokenizer this is ``pos_v + 3`` inclusive, the original's ``+3``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

FLOWS: tuple[str, ...] = ("S_v", "S_t", "S_o")
COLOURS: dict[str, str] = {"S_v": "red", "S_t": "green", "S_o": "blue"}


# ------------------------------------------------------------------------------------------------ pure functions
def saliency_matrix(attention: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``I = |sum_heads A * dL/dA|`` with a zero diagonal and NaN set to 0.

    Args:
        attention: Attention probabilities of one layer ``(B, heads, T, T)``.
        grad: ``dL/dA`` of the same shape.

    Returns:
        ``(B, T, T)`` float32 saliency matrices.
    """
    sal = (attention.float() * grad.float()).sum(1).abs()  # (B, T, T)
    sal = torch.nan_to_num(sal, nan=0.0)
    eye = torch.eye(sal.shape[-1], dtype=torch.bool, device=sal.device)
    return sal.masked_fill(eye, 0.0)


def flow_scores(sal: torch.Tensor, target: torch.Tensor, v_start: torch.Tensor, v_end: torch.Tensor) -> torch.Tensor:
    """``[S_v, S_t, S_o]`` of every note (docs/method.md#saliency step 5).

    Args:
        sal: Saliency matrices ``(B, T, T)`` (rows attend to columns).
        target: Embedding-token position ``t`` of each note ``(B,)``.
        v_start: First position of the image region ``(B,)``.
        v_end: One past its last position ``(B,)``; ``v_start == v_end`` means no image region (``S_v = 0``).

    Returns:
        ``(B, 3)`` float32 scores.
    """
    b, length, _ = sal.shape
    dev = sal.device
    t = target.to(dev).long()
    j = torch.arange(length, device=dev)[None, :]  # (1, T)
    row = sal[torch.arange(b, device=dev), t]  # (B, T): flows into the target
    in_v = (j >= v_start.to(dev)[:, None]) & (j < v_end.to(dev)[:, None]) & (j < t[:, None])  # (B, T)
    before = j < t[:, None]  # (B, T)
    n_v = in_v.sum(1).float()  # (B,)
    sum_v = (row * in_v).sum(1)
    sum_t = (row * (before & ~in_v)).sum(1)
    # sum_{i,j<=t} I(i,j) - |V| S_v - (t-|V|) S_t is the sum over the rows i < t (row t is exactly the flows into
    # the target); summing those rows directly avoids a cancellation that can leave a tiny negative S_o
    rows_other = (j < t[:, None]).float()  # (B, T)
    cols = (j <= t[:, None]).float()  # (B, T)
    others = (sal * rows_other[:, :, None] * cols[:, None, :]).sum((1, 2))  # (B,)
    tf = t.float()
    s_v = torch.where(n_v > 0, sum_v / n_v.clamp(min=1), torch.zeros_like(sum_v))
    s_t = sum_t / (tf - n_v).clamp(min=1)
    s_o = others / (tf * (tf + 1) / 2 - tf).clamp(min=1)
    return torch.stack([s_v, s_t, s_o], dim=1)


def normalise_layers(scores: np.ndarray) -> np.ndarray:
    """Normalise each layer's ``[S_v, S_t, S_o]`` to sum to 1 (layers that are all zero stay zero)."""
    total = scores.sum(axis=-1, keepdims=True)
    return np.divide(scores, total, out=np.zeros_like(scores), where=total > 0)


# ------------------------------------------------------------------------------------------------ regions
def closing_text(preset: str) -> str:
    """The punctuation that closes the mICL image-compression segment after the marker (``".`` / ``”。``)."""
    from notellm2_pl.data.prompts import MARKER, PRESETS

    after = PRESETS[preset]["micl"].split(MARKER, 1)[1]
    return re.sub(r"\s", "", re.match(r"[^\w]*", after).group(0))


def _closing_length(tokenizer: Any, ids: Sequence[int], closing: str, max_tokens: int = 8) -> int:
    """Number of tokens at the start of ``ids`` needed to spell ``closing`` (0 if it never appears)."""
    for n in range(1, min(max_tokens, len(ids)) + 1):
        text = re.sub(r"\s", "", tokenizer.decode(list(ids[:n])))
        if text[: len(closing)] == closing:
            return n
    return 0


def image_region(encoder: Any, batch: Mapping[str, Any], out: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Spliced ``[start, end)`` of the image region ``V`` of each note, from tracked positions (module docstring).

    Args:
        encoder: The ``NoteEncoder`` (``module.encoder``).
        batch: The model inputs (``input_ids``, ``marker_pos``...).
        out: The ``EncoderOutput`` of that batch.

    Returns:
        ``(start, end)``, each ``(B,)`` int64; ``start == end == 0`` for notes without visual tokens.
    """
    fmt = encoder.note_format()
    span = out.image_span.to(out.last_pos.device)
    start, end = span[:, 0].clone(), span[:, 1].clone()
    none = start < 0
    start = start - len(fmt.image_open_ids)  # insert mode: the open tag(s)
    end = end + len(fmt.image_close_ids)  # ... and the close tag(s)
    if encoder.micl:
        closing = closing_text(fmt.preset)
        tok = fmt.tokenizer
        ids, marker = batch["input_ids"], batch["marker_pos"]
        n_close = []
        for b in range(ids.shape[0]):
            m = int(marker[b])
            n = _closing_length(tok, ids[b, m + 1:].tolist(), closing) if m >= 0 else 0
            if m >= 0 and n == 0:
                log.warning("Could not find the closing %r of the image-compression segment; the mICL image region "
                            "ends at the marker.", closing)
            n_close.append(n)
        end = out.pos_v + 2 + torch.tensor(n_close, device=end.device)  # pos_v, marker, closing tokens
    start = torch.where(none, torch.zeros_like(start), start)
    end = torch.where(none, torch.zeros_like(end), end)
    return start.long(), end.long()


# ------------------------------------------------------------------------------------------------ model side
@contextlib.contextmanager
def _attention_in_graph(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode and every parameter marked trainable (so the attention maps have a graph); restored on exit.

    The vision tower is left as it is: its features enter the LLM as inputs, so the attention maps have a graph
    without it, and a frozen tower keeps serving the feature cache.
    """
    vision = getattr(getattr(module, "encoder", None), "vision", None)
    tower = {id(p) for p in vision.parameters()} if vision is not None else set()
    flags = [(p, p.requires_grad) for p in module.parameters() if id(p) not in tower]
    was_training = module.training
    module.eval()
    try:
        for p, _ in flags:
            p.requires_grad_(True)
        with torch.enable_grad():
            yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        module.train(was_training)


def embedding_loss(module: Any, e_m: torch.Tensor, note_hash: torch.Tensor) -> torch.Tensor:
    """The contrastive loss of docs/method.md#contrastive-loss on ``e_m`` of one local batch of pairs (``[queries; targets]``)."""
    from notellm2_pl.model.losses import contrastive_loss

    hp = getattr(module, "hparams", {})
    ids = note_hash.to(e_m.device) if hp.get("mask_same_id", True) else None
    return contrastive_loss(e_m, e_m, 0, module.tau.exp(), ids, ids)


def batch_saliency(module: Any, batch: Mapping[str, Any]) -> tuple[list[torch.Tensor], Any]:
    """Saliency matrices of every layer for one batch of training pairs.

    Args:
        module: A ``NoteLLM2Module`` (anything with ``.encoder`` and ``.tau``).
        batch: A pair batch (``collate_pairs``), already on the module's device.

    Returns:
        ``(per-layer (B, T, T) saliency matrices, EncoderOutput)``.
    """
    with _attention_in_graph(module):
        out = module.encoder(batch, output_attentions=True)
        if not out.attentions:
            raise RuntimeError("The LLM backbone returned no attention maps; its plugin must honour "
                               "output_attentions=True (see notellm2_pl.plugins.contract.LLMBackbone).")
        loss = embedding_loss(module, out.e_m, batch["note_hash"])
        grads = torch.autograd.grad(loss, list(out.attentions), allow_unused=True)
        mats = [saliency_matrix(a.detach(), g if g is not None else torch.zeros_like(a))
                for a, g in zip(out.attentions, grads)]
    return mats, out


@dataclass
class SaliencyResult:
    """Per-layer information flows of one model.

    Attributes:
        scores: ``(layers, 3)`` ``[S_v, S_t, S_o]`` normalised per layer to sum to 1.
        raw: ``(layers, 3)`` means over notes, before normalisation.
        num_notes: Notes averaged over.
        num_batches: Batches of pairs used.
        label: Model name for plots.
        meta: Settings (checkpoint, batch size, attention kind...).
    """

    scores: np.ndarray
    raw: np.ndarray
    num_notes: int
    num_batches: int
    label: str = "model"
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``saliency.json``)."""
        return {"label": self.label, "flows": list(FLOWS), "num_notes": self.num_notes,
                "num_batches": self.num_batches, "attention": "post_softmax",
                "normalised": {f: self.scores[:, i].tolist() for i, f in enumerate(FLOWS)},
                "raw": {f: self.raw[:, i].tolist() for i, f in enumerate(FLOWS)}, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SaliencyResult:
        """Inverse of :meth:`to_dict`."""
        scores = np.stack([np.asarray(d["normalised"][f], dtype=np.float64) for f in FLOWS], axis=1)
        raw = np.stack([np.asarray(d["raw"][f], dtype=np.float64) for f in FLOWS], axis=1)
        return cls(scores, raw, int(d["num_notes"]), int(d["num_batches"]), d.get("label", "model"),
                   dict(d.get("meta", {})))


def compute_saliency(module: Any, batches: Iterable[Mapping[str, Any]], num_batches: int | None = None,
                     device: str | torch.device | None = None, label: str = "model") -> SaliencyResult:
    """Average ``[S_v, S_t, S_o]`` per layer over batches of training pairs (docs/method.md#saliency step 6).

    Args:
        module: A ``NoteLLM2Module``.
        batches: Pair batches (``collate_pairs``).
        num_batches: Stop after this many batches (None: all).
        device: Move batches here (default: the module's device).
        label: Model name recorded in the result.
    """
    dev = torch.device(device) if device is not None else next(module.parameters()).device
    per_note: list[torch.Tensor] = []
    used = 0
    for batch in batches:
        if num_batches is not None and used >= num_batches:
            break
        batch = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in batch.items()}
        mats, out = batch_saliency(module, batch)
        start, end = image_region(module.encoder, batch, out)
        flows = torch.stack([flow_scores(m, out.last_pos, start, end) for m in mats], dim=1)  # (B, layers, 3)
        per_note.append(flows.cpu())
        used += 1
        log.info("saliency: batch %d%s", used, f"/{num_batches}" if num_batches else "")
    if not per_note:
        raise ValueError("No batches: the training split has fewer pairs than one batch (lower --batch_size).")
    allf = torch.cat(per_note).double().numpy()  # (N, layers, 3)
    raw = allf.mean(0)
    return SaliencyResult(normalise_layers(raw), raw, allf.shape[0], used, label)


# ------------------------------------------------------------------------------------------------ outputs
def plot_saliency(results: Sequence[SaliencyResult], path: str | os.PathLike[str] | None = None,
                  ymax: float = 0.8) -> Any:
    """Plot ``S_v`` (red), ``S_t`` (green), ``S_o`` (blue) against layer, one panel per model.

    Args:
        results: One or more models.
        path: Write a PNG here (None: only return the figure).
        ymax: Upper y limit (docs/method.md: 0.8; raised automatically if a value is larger).

    Returns:
        The matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(results)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    top = max([ymax] + [float(r.scores.max()) * 1.05 for r in results])
    for ax, res in zip(axes.flat, results):
        layers = np.arange(res.scores.shape[0])
        for i, f in enumerate(FLOWS):
            ax.plot(layers, res.scores[:, i], marker="o", color=COLOURS[f], label=f)
        if len(layers) <= 40:
            ax.set_xticks(layers)
        ax.set_title(res.label, fontsize=10)
        ax.set_xlabel("layer")
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


def log_saliency(result: SaliencyResult, writer: Any, tag: str = "saliency") -> None:
    """TensorBoard: per-layer scalars ``{tag}/{S_v|S_t|S_o}`` (step = layer) and the plot as a figure."""
    for i, f in enumerate(FLOWS):
        for layer, v in enumerate(result.scores[:, i]):
            writer.add_scalar(f"{tag}/{f}", float(v), layer)
    writer.add_figure(f"{tag}/plot", plot_saliency([result]), 0, close=True)


def write_saliency(result: SaliencyResult, out_dir: str | os.PathLike[str], tb: bool = True) -> Path:
    """Write ``saliency.json``, ``saliency.png`` and (``tb``) TensorBoard events under ``out_dir/tb``."""
    import matplotlib.pyplot as plt

    from notellm2_pl.atomic import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "saliency.json", json.dumps(result.to_dict(), indent=1))
    plt.close(plot_saliency([result], out / "saliency.png"))
    if tb:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=os.fspath(out / "tb"))
        try:
            log_saliency(result, writer)
        finally:
            writer.close()
    return out / "saliency.json"


# ------------------------------------------------------------------------------------------------ data
def training_batches(module: Any, root: str, data_cfg: Mapping[str, Any], batch_size: int,
                     seed: int = 0) -> Iterator[dict[str, Any]]:
    """Shuffled (seeded) batches of training pairs, processed with the model's own note format.

    Args:
        module: The model (its ``note_format`` drives tokenisation and image preprocessing).
        root: Dataset root.
        data_cfg: The recipe's ``data`` section (text limits, ``max_tokens``...).
        batch_size: Pairs per batch (``2 * batch_size`` notes).
        seed: Shuffle seed.
    """
    from torch.utils.data import DataLoader

    from notellm2_pl.data.datamodule import NoteDataModule, PairDataset
    from notellm2_pl.data.processing import collate_pairs

    keys = ("title_chars", "content_chars", "max_tags", "max_tokens", "on_error")
    dm = NoteDataModule(root=root, batch_size=batch_size, **{k: data_cfg[k] for k in keys if k in data_cfg})
    dm.attach(module)
    dm.setup("fit")
    split = dm.splits["train"]
    ds = PairDataset(split.pairs["all"], split.notes, dm.processor)
    gen = torch.Generator().manual_seed(seed)
    yield from DataLoader(ds, batch_size=batch_size, shuffle=True, generator=gen, collate_fn=collate_pairs,
                          drop_last=True)


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the ``saliency`` command."""
    p = argparse.ArgumentParser(
        prog="python -m notellm2_pl saliency",
        description="Information-flow saliency (docs/method.md#saliency): per-layer S_v (image -> embedding token), S_t (other "
                    "tokens -> embedding token), S_o (among other tokens), from |sum_heads A * dL/dA| of the "
                    "contrastive loss on e_m over training-pair batches (eval mode, no optimiser step). Writes "
                    "saliency.json, saliency.png and TensorBoard events. Extra --model.* / --data.* arguments are "
                    "recipe overrides.",
        epilog="Examples:\n"
               "  python -m notellm2_pl saliency --ckpt_path runs/ablations/demo/basic-s0-xxxx/checkpoints/best.ckpt\n"
               "  python -m notellm2_pl saliency --config recipes/demo.yaml --num_batches 4   # untrained model\n"
               "  python -m notellm2_pl saliency --compare out/basic/saliency.json out/notellm2/saliency.json "
               "--out out/compare",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ckpt_path", help="Checkpoint to analyse (its hparams name the backbones, else add --config).")
    p.add_argument("--config", action="append", help="Recipe(s) (repeatable); alone: analyse the untrained model.")
    p.add_argument("--compare", nargs="+", metavar="JSON", help="Only plot several saliency.json files together.")
    p.add_argument("--data", metavar="ROOT", help="Dataset root (default: the recipe's / checkpoint's).")
    p.add_argument("--num_batches", type=int, default=8, help="Batches of training pairs to average over (the "
                                                                "paper: 1000 batches of 32 notes).")
    p.add_argument("--batch_size", type=int, default=16, help="Pairs per batch (2x notes).")
    p.add_argument("--seed", type=int, default=0, help="Shuffle seed of the training pairs.")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1...")
    p.add_argument("--label", help="Model name in plots (default: the checkpoint's or recipe's name).")
    p.add_argument("--out", help="Output folder (default: <checkpoint dir>/saliency or runs/saliency/<label>).")
    p.add_argument("--no_tb", action="store_true", help="Do not write TensorBoard events.")
    return p


def cli_main(argv: list[str] | None = None) -> int:
    """``python -m notellm2_pl saliency``; run with ``--help``."""
    p = build_parser()
    args, overrides = p.parse_known_args(argv)
    if args.compare:
        results = [SaliencyResult.from_dict(json.loads(Path(f).read_text())) for f in args.compare]
        out = Path(args.out or "runs/saliency/compare")
        out.mkdir(parents=True, exist_ok=True)
        plot_saliency(results, out / "saliency_compare.png")
        print(f"Wrote {out / 'saliency_compare.png'}")
        return 0
    if not args.ckpt_path and not args.config:
        p.error("give --ckpt_path CKPT [--config RECIPE], --config RECIPE (untrained model), or --compare JSON...")
    from notellm2_pl.inference.export import build_from_checkpoint, build_from_config

    if args.ckpt_path:
        module, _, data_cfg = build_from_checkpoint(args.ckpt_path, args.config, overrides)
        label = args.label or Path(args.ckpt_path).parent.parent.name
        default_out = Path(args.ckpt_path).parent.parent / "saliency"
    else:
        module, _, data_cfg = build_from_config(args.config, overrides)
        label = args.label or Path(args.config[-1]).stem
        default_out = Path("runs/saliency") / label
    root = args.data or data_cfg.get("root")
    if not root:
        p.error("no dataset root recorded: pass --data ROOT.")
    module = module.to(args.device)
    batches = training_batches(module, root, data_cfg, args.batch_size, args.seed)
    result = compute_saliency(module, batches, args.num_batches, args.device, label)
    result.meta = {"ckpt_path": args.ckpt_path, "config": args.config, "data": str(root),
                   "batch_size": args.batch_size, "seed": args.seed, "overrides": overrides}
    out = Path(args.out) if args.out else default_out
    path = write_saliency(result, out, tb=not args.no_tb)
    print(f"Information flow of {label} ({result.num_notes} notes, {result.num_batches} batches), normalised per "
          f"layer:")
    print("  layer    S_v     S_t     S_o")
    for layer, (sv, st, so) in enumerate(result.scores):
        print(f"  {layer:>5}  {sv:.4f}  {st:.4f}  {so:.4f}")
    print(f"Wrote {path}, {out / 'saliency.png'}" + ("" if args.no_tb else f"; TensorBoard: {out / 'tb'}"))
    return 0
