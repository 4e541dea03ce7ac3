"""The ``evaluate`` command: exact Recall@K (docs/method.md#evaluation-protocol) of saved embeddings or of a model, with probes.

Two sources:

- ``--embeddings DIR [DIR ...]``: embeddings directories written by ``predict`` with
  :class:`~notellm2_pl.retrieval.prediction_writer.EmbeddingWriter` (one per probe; the probe is read from each ``meta.json``).
- ``--model EXPORT_DIR`` or ``--ckpt_path CKPT [--config RECIPE]``: the test notes are embedded here, once per probe
  (``full``, ``only_image``, ``only_text``; docs/method.md#only-image-and-only-text-probes).

Every embedding kind is evaluated (``e_m``, and the mICL visual embedding ``e_v``) on every pair set of the test split
(``all`` + the short/long subsets: subset files, or subsets derived from raw text length). Output: a console table,
``results.json`` / ``results.csv`` and TensorBoard scalars ``test/{probe}/{e_m|e_v}/recall/{subset}/R@{K}``.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from notellm2_pl.retrieval.recall import (
    DEFAULT_KS,
    EvalResult,
    evaluate_subsets,
    format_table,
    log_to_tensorboard,
    write_results,
)

log = logging.getLogger(__name__)

BASE_KS: tuple[int, ...] = (10, 20, 50, 100, 1000)
PROBES: tuple[str, ...] = ("full", "only_image", "only_text")


def default_ks(pool_size: int) -> list[int]:
    """10, 20, 50, 100, 1000, then every larger K of docs/method.md#recall-at-k (10k, 100k, 1M) up to the pool size."""
    return list(BASE_KS) + [k for k in DEFAULT_KS if k not in BASE_KS and k <= pool_size]


def load_test_pool(root: str | os.PathLike[str], on_error: str = "raise", short_max_chars: int = 30,
              long_min_chars: int = 100) -> tuple[list[str], dict[str, Any], dict[str, list[tuple[str, str]]]]:
    """The test pool of a dataset: ``(sorted note ids, notes by id, pair sets)``, as ``NoteDataModule`` defines them.

    Args:
        root: Dataset root (canonical or official layout).
        on_error: ``raise`` or ``skip`` bad rows.
        short_max_chars: Short-text threshold of the derived subsets (datasets without subset files).
        long_min_chars: Long-text threshold of the derived subsets.
    """
    from notellm2_pl.data.datamodule import NoteDataModule

    dm = NoteDataModule(root=os.fspath(root), on_error=on_error, short_max_chars=short_max_chars,
                        long_min_chars=long_min_chars)
    pair_sets = dm.test_pair_sets()
    return dm.pool_ids("test"), dm.splits["test"].notes, pair_sets


def evaluate_runs(runs: Mapping[str, tuple[Sequence[str], np.ndarray]], pair_sets: Mapping[str, Sequence],
                  ks: Sequence[int]) -> dict[str, dict[str, EvalResult]]:
    """Evaluate several embedding sets (``{run name: (ids, emb)}``) on every pair set.

    A set whose rows are all the same vector (e.g. ``e_v`` under ``only_text``: the blank image is all it sees) is
    skipped with a warning: every note would tie with every other, and ties count in the target's favour.
    """
    out: dict[str, dict[str, EvalResult]] = {}
    for name, (ids, emb) in runs.items():
        if len(emb) > 1 and float(np.ptp(emb, axis=0).max()) < 1e-6:
            log.warning("Skipping %s: every note has the same embedding (the input it depends on is blank).", name)
            continue
        out[name] = evaluate_subsets(emb, ids, pair_sets, ks=ks)
    return out


def report(results: Mapping[str, Mapping[str, EvalResult]], out_dir: str | os.PathLike[str] | None,
           tb_dir: str | os.PathLike[str] | None, step: int = 0) -> str:
    """Format the table, write ``results.json`` / ``results.csv`` and TensorBoard scalars; return the table."""
    flat = {f"{run}/{subset}": res for run, subsets in results.items() for subset, res in subsets.items()}
    if out_dir is not None:
        write_results(flat, Path(out_dir) / "results.json", Path(out_dir) / "results.csv")
    if tb_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=os.fspath(tb_dir))
        try:
            for run, subsets in results.items():
                log_to_tensorboard(subsets, writer, prefix=f"test/{run}", step=step)
        finally:
            writer.close()
    return format_table(flat)


def _runs_from_embeddings(dirs: Sequence[str]) -> tuple[dict[str, tuple[list[str], np.ndarray]], str | None]:
    from notellm2_pl.retrieval.prediction_writer import load_embeddings, read_meta

    runs: dict[str, tuple[list[str], np.ndarray]] = {}
    root = None
    for d in dirs:
        meta = read_meta(d)
        root = root or meta.get("data_root")
        if meta.get("split", "test") != "test":
            log.warning("%s holds %s-split embeddings; the protocol evaluates the test split.", d, meta["split"])
        for key in meta.get("keys", ["e_m"]):
            name = f"{meta.get('probe', 'full')}/{key}"
            if name in runs:
                name = f"{Path(d).name}/{key}"
            runs[name] = load_embeddings(d, key)
    return runs, root


def _embed_probes(embedder: Any, ids: list[str], notes: Mapping[str, Any], probes: Sequence[str], batch_size: int,
                  save_dir: Path | None, data_root: str) -> dict[str, tuple[list[str], np.ndarray]]:
    from notellm2_pl.retrieval.prediction_writer import write_embeddings

    runs: dict[str, tuple[list[str], np.ndarray]] = {}
    has_vision = getattr(embedder.module.encoder, "vision", None) is not None
    pool = [notes[i] for i in ids]
    for probe in probes:
        if probe != "full" and not has_vision:
            log.info("Skipping probe %s: the model has no vision tower.", probe)
            continue
        arrays = embedder.embed_all(pool, batch_size=batch_size, progress=True, probe=probe)
        if save_dir is not None:
            write_embeddings(save_dir / probe, ids, arrays, probe=probe, data_root=data_root,
                             variant=getattr(embedder.module.encoder, "variant", None))
        for key, emb in arrays.items():
            runs[f"{probe}/{key}"] = (ids, emb)
    return runs


def _parse_ks(text: str | None, pool_size: int) -> list[int]:
    if not text:
        return default_ks(pool_size)
    try:
        ks = [int(float(k)) for k in text.replace(" ", "").split(",") if k]
    except ValueError as err:
        raise SystemExit(f"--ks takes comma-separated integers, e.g. --ks 10,100,1000 (got {text!r}).") from err
    return ks


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m notellm2_pl evaluate",
        description="Exact Recall@K (docs/method.md#evaluation-protocol) on every pair set of a dataset's test split (all + short/long "
                    "subsets), for e_m and (mICL) e_v, with the only_image / only_text probes.",
        epilog="Examples:\n"
               "  python -m notellm2_pl evaluate --model runs/demo/export --data data/synthetic\n"
               "  python -m notellm2_pl evaluate --config recipes/demo.yaml --ckpt_path runs/demo/checkpoints/best.ckpt\n"
               "  python -m notellm2_pl evaluate --embeddings runs/demo/emb/full runs/demo/emb/only_image "
               "--data data/synthetic",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("source (one of)")
    src.add_argument("--embeddings", nargs="+", metavar="DIR", help="Embeddings directories written by predict.")
    src.add_argument("--model", metavar="EXPORT_DIR", help="Model export directory (python -m notellm2_pl export).")
    src.add_argument("--ckpt_path", help="Lightning checkpoint (with --config unless its hparams name the backbones).")
    src.add_argument("--config", help="Recipe of --ckpt_path.")
    p.add_argument("--data", metavar="ROOT", help="Dataset root (default: the one recorded with the embeddings or the "
                                                 "model).")
    p.add_argument("--ks", help="Comma-separated K values (default: 10,20,50,100,1000 and 10k/100k/1M up to the "
                                "pool size).")
    p.add_argument("--probes", default=",".join(PROBES),
                   help="Probes to embed with --model/--ckpt_path (default: full,only_image,only_text).")
    p.add_argument("--batch_size", type=int, default=64, help="Notes per forward pass (--model/--ckpt_path).")
    p.add_argument("--device", default="cpu", help="Device for --model/--ckpt_path (cpu, cuda, cuda:1...).")
    p.add_argument("--num_workers", type=int, default=0, help="DataLoader workers for image decoding.")
    p.add_argument("--out", help="Output folder for results.json / results.csv (default: <source>/eval).")
    p.add_argument("--tb_dir", help="TensorBoard log dir (default: <out>/tb).")
    p.add_argument("--no_tb", action="store_true", help="Do not write TensorBoard scalars.")
    p.add_argument("--save_embeddings", action="store_true",
                   help="With --model/--ckpt_path: also write the embeddings to <out>/embeddings/<probe> (for search).")
    p.add_argument("--short_max_chars", type=int, default=None, help="Short-text threshold of derived subsets.")
    p.add_argument("--long_min_chars", type=int, default=None, help="Long-text threshold of derived subsets.")
    p.add_argument("--on_error", choices=("raise", "skip"), default="raise", help="Bad data rows: raise or skip.")
    return p


def cli_main(argv: list[str] | None = None) -> int:
    """``python -m notellm2_pl evaluate``; run with ``--help``."""
    p = build_parser()
    args, overrides = p.parse_known_args(argv)
    sources = [bool(args.embeddings), bool(args.model), bool(args.ckpt_path)]
    if sum(sources) != 1:
        p.error("give exactly one source: --embeddings DIR..., --model EXPORT_DIR, or --ckpt_path CKPT [--config "
                "RECIPE].")
    if overrides and not args.ckpt_path:
        p.error(f"unrecognized arguments: {' '.join(overrides)}")
    probes = [x for x in args.probes.split(",") if x]
    bad = [x for x in probes if x not in PROBES]
    if bad:
        p.error(f"unknown probe(s) {bad}; choose from {','.join(PROBES)}.")

    data_cfg: dict[str, Any] = {}
    embedder = None
    if args.embeddings:
        runs, recorded_root = _runs_from_embeddings(args.embeddings)
        default_out = Path(args.embeddings[0]) / "eval"
    else:
        from notellm2_pl.inference.export import Embedder, _processor_settings, build_from_checkpoint, read_export_config

        if args.model:
            embedder = Embedder.from_pretrained(args.model, device=args.device, num_workers=args.num_workers)
            data_cfg = read_export_config(args.model).get("data", {})
            default_out = Path(args.model) / "eval"
        else:
            module, _, data_cfg = build_from_checkpoint(args.ckpt_path, args.config, overrides)
            embedder = Embedder(module.to(args.device), *_processor_settings(data_cfg), num_workers=args.num_workers)
            default_out = Path(args.ckpt_path).parent / "eval"
        recorded_root = data_cfg.get("root")
    root = args.data or recorded_root
    if not root:
        p.error("no dataset root recorded with the source: pass --data ROOT.")
    short = args.short_max_chars if args.short_max_chars is not None else data_cfg.get("short_max_chars", 30)
    long_ = args.long_min_chars if args.long_min_chars is not None else data_cfg.get("long_min_chars", 100)
    ids, notes, pair_sets = load_test_pool(root, args.on_error, short, long_)
    out = Path(args.out) if args.out else default_out
    if embedder is not None:
        runs = _embed_probes(embedder, ids, notes, probes, args.batch_size,
                             out / "embeddings" if args.save_embeddings else None, os.fspath(root))
    else:
        missing = len(set(ids) - set(next(iter(runs.values()))[0]))
        if missing:
            log.warning("%d of %d test notes of %s have no embedding; pairs naming them are skipped.", missing,
                        len(ids), root)
    ks = _parse_ks(args.ks, len(ids))
    results = evaluate_runs(runs, pair_sets, ks)
    tb = None if args.no_tb else (Path(args.tb_dir) if args.tb_dir else out / "tb")
    table = report(results, out, tb)
    print(f"Recall@K on the test split of {root} (pool = all {len(ids)} test notes minus each set's queries):")
    print(table)
    print(f"\nWrote {out / 'results.json'} and {out / 'results.csv'}" + (f"; TensorBoard: tensorboard --logdir {tb}"
                                                                          if tb else ""))
    return 0
