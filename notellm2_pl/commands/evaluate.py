"""``python -m notellm2_pl evaluate``: exact Recall@K (docs/method.md#evaluation-protocol) of embeddings or a model.

Sources (one of): ``--embeddings DIR [DIR ...]`` (embeddings directories, one per probe), ``--model EXPORT_DIR``, or
``--ckpt_path CKPT [--config RECIPE]`` (the test notes are embedded here, once per probe). The library side is
:mod:`notellm2_pl.retrieval.evaluation`.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from notellm2_pl.analysis.baseline_cache import BaselineCache, dataset_fingerprint, default_cache_dir
from notellm2_pl.analysis.baseline_check import MODEL_RUN
from notellm2_pl.analysis.baselines import (
    DEFAULT_BASELINES,
    BaselinePool,
    parse_baselines,
    plan_baselines,
    report_baselines,
    run_baselines,
)
from notellm2_pl.analysis.modality_check import check_results, format_modality_check
from notellm2_pl.data.schema import PROBES
from notellm2_pl.data.truncation import measure_truncation
from notellm2_pl.inference.embedder import Embedder
from notellm2_pl.inference.export import read_export_config
from notellm2_pl.inference.factory import build_from_checkpoint, recipe_sections
from notellm2_pl.retrieval.evaluation import (
    NotesInOrder,
    default_ks,
    embed_probes,
    evaluate_runs,
    format_spreads,
    load_test_pool,
    measure_spreads,
    report,
    runs_from_embeddings,
    write_spreads,
)
from notellm2_pl.retrieval.pairs import DEFAULT_LONG_MIN_CHARS, DEFAULT_SHORT_MAX_CHARS
from notellm2_pl.retrieval.recall import EvalResult
from notellm2_pl.training.hparams import migrate_hparams

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``evaluate``; with ``--ckpt_path``, arguments it does not know are recipe overrides."""
    p = argparse.ArgumentParser(
        prog="python -m notellm2_pl evaluate",
        description="Exact Recall@K (docs/method.md#evaluation-protocol) on every pair set of a dataset's test split "
                    "(all + short/long subsets), for e_m and (mICL) e_v, with the only_image / only_text probes.",
        epilog="Examples:\n"
               "  python -m notellm2_pl evaluate --model runs/demo/export --data data/synthetic\n"
               "  python -m notellm2_pl evaluate --config recipes/demo.yaml "
               "--ckpt_path runs/demo/checkpoints/best.ckpt\n"
               "  python -m notellm2_pl evaluate --embeddings runs/demo/emb/full runs/demo/emb/only_image "
               "--data data/synthetic",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("source (one of)")
    src.add_argument("--embeddings", nargs="+", metavar="DIR", help="Embeddings directories written by predict.")
    src.add_argument("--model", metavar="EXPORT_DIR", help="Model export directory (python -m notellm2_pl export).")
    src.add_argument("--ckpt_path", help="Lightning checkpoint; fit records the backbones and data settings in it, so "
                     "--config is needed only for checkpoints written before that.")
    src.add_argument("--config", help="Recipe of --ckpt_path (with --embeddings: the recipe whose backbones give the "
                     "untrained baselines).")
    p.add_argument("--data", metavar="ROOT", help="Dataset root (default: the one recorded with the embeddings or the "
                                                 "model).")
    p.add_argument("--streaming", metavar="PREPARED", help="Read the test pool from prepared streaming data (prepare's "
                   "folder or URL): notes are streamed from its chunks as they are embedded, never held in memory.")
    p.add_argument("--streaming_cache", metavar="DIR", help="Local chunk cache for a --streaming URL.")
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
    b = p.add_argument_group("baselines (docs/evaluation.md#baselines)")
    b.add_argument("--baselines", default=DEFAULT_BASELINES, metavar="LIST",
                   help=f"Zero-training baselines ranked on the same pool and pairs (default: {DEFAULT_BASELINES}; "
                        "untrained = the model's own LLM and vision tower before training), or none.")
    b.add_argument("--baseline", action="append", default=[], metavar="st:PATH",
                   help="Also a sentence-transformers model folder (repeatable), loaded offline.")
    b.add_argument("--baselines_cache", metavar="DIR", help="Baseline cache folder (default: "
                   "$NOTELLM2_PL_BASELINES_CACHE or ~/.cache/notellm2_pl/baselines).")
    return p


def _parse_ks(text: str | None, pool_size: int) -> list[int]:
    if not text:
        return default_ks(pool_size)
    try:
        ks = [int(float(k)) for k in text.replace(" ", "").split(",") if k]
    except ValueError as err:
        raise SystemExit(f"--ks takes comma-separated integers, e.g. --ks 10,100,1000 (got {text!r}).") from err
    return ks


def _checked_probes(p: argparse.ArgumentParser, args: argparse.Namespace, overrides: list[str]) -> list[str]:
    """Check that there is exactly one source and overrides only with a checkpoint; return the probes."""
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
    return probes


def _model_source(args: argparse.Namespace,
                  overrides: list[str]) -> tuple[Embedder, dict[str, Any], dict[str, Any], Path]:
    """``(embedder, model config, data config, default output folder)`` of ``--model`` or ``--ckpt_path``."""
    if args.model:
        embedder = Embedder.from_pretrained(args.model, device=args.device, num_workers=args.num_workers)
        cfg = read_export_config(args.model)
        return embedder, migrate_hparams(cfg["model"]), cfg.get("data", {}), Path(args.model) / "eval"
    module, model_cfg, data_cfg = build_from_checkpoint(args.ckpt_path, args.config, overrides)
    embedder = Embedder.from_module(module, data_cfg, device=args.device, num_workers=args.num_workers)
    return embedder, model_cfg, data_cfg, Path(args.ckpt_path).parent / "eval"


def _requested_baselines(p: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The baselines of ``--baselines`` and ``--baseline`` (a usage error on an unknown one)."""
    try:
        return parse_baselines(args.baselines, args.baseline)
    except ValueError as err:
        p.error(str(err))


def _baselines(args: argparse.Namespace, requested: list[str], model_cfg: dict[str, Any] | None,
               data_cfg: dict[str, Any], pool: BaselinePool) -> dict[str, dict[str, EvalResult]]:
    """The requested baselines' results on the model's pool (cached; none requested: none)."""
    if not requested:
        return {}
    if model_cfg is None and args.config and any(not n.startswith("st:") for n in requested):
        model_cfg, recipe_data = recipe_sections(args.config)
        data_cfg = {**recipe_data, **data_cfg}
    planned = plan_baselines(requested, model_cfg, data_cfg)
    cache = BaselineCache(args.baselines_cache or default_cache_dir())
    return run_baselines(planned, pool, cache)


def main(argv: list[str] | None = None) -> int:
    """Run ``evaluate``; returns the exit code."""
    p = build_parser()
    args, overrides = p.parse_known_args(argv)
    probes = _checked_probes(p, args, overrides)
    requested = _requested_baselines(p, args)
    data_cfg: dict[str, Any] = {}
    model_cfg: dict[str, Any] | None = None
    embedder = None
    if args.embeddings:
        runs, recorded_root = runs_from_embeddings(args.embeddings)
        default_out = Path(args.embeddings[0]) / "eval"
    else:
        embedder, model_cfg, data_cfg, default_out = _model_source(args, overrides)
        recorded_root = data_cfg.get("root")
    root = args.data or recorded_root
    if args.streaming is None and not args.data and data_cfg.get("streaming"):
        args.streaming = data_cfg["streaming"]  # trained on streaming data: evaluate on it too
        args.streaming_cache = args.streaming_cache or data_cfg.get("streaming_cache")
    source = args.streaming or root
    if not source:
        p.error("no dataset root recorded with the source: pass --data ROOT (or --streaming PREPARED).")
    short = args.short_max_chars if args.short_max_chars is not None else data_cfg.get(
        "short_max_chars", DEFAULT_SHORT_MAX_CHARS)
    long_ = args.long_min_chars if args.long_min_chars is not None else data_cfg.get(
        "long_min_chars", DEFAULT_LONG_MIN_CHARS)
    ids, notes, pair_sets = load_test_pool(root, args.on_error, short, long_, args.streaming, args.streaming_cache)
    out = Path(args.out) if args.out else default_out
    if embedder is not None:
        runs = embed_probes(embedder, ids, notes, probes, args.batch_size,
                            out / "embeddings" if args.save_embeddings else None, os.fspath(source))
    else:
        missing = len(set(ids) - set(next(iter(runs.values()))[0]))
        if missing:
            log.warning("%d of %d test notes of %s have no embedding; pairs naming them are skipped.", missing,
                        len(ids), source)
    results = evaluate_runs(runs, pair_sets, ks := _parse_ks(args.ks, len(ids)))
    baselines = _baselines(args, requested, model_cfg, data_cfg, BaselinePool(
        ids, NotesInOrder(notes, ids), pair_sets, ks, dataset_fingerprint(source), args.batch_size, args.device,
        args.num_workers))
    spreads = measure_spreads(runs)
    tb = None if args.no_tb else (Path(args.tb_dir) if args.tb_dir else out / "tb")
    table = report(results, out, tb)
    write_spreads(spreads, out)
    print(f"Recall@K on the test split of {source} (pool = all {len(ids)} test notes minus each set's queries; "
          "ties broken at random):")
    print(table)
    print("\n" + format_spreads(spreads))
    collapsed = [name for name, sp in spreads.items() if sp.collapsed]
    if {"only_text", "only_image"} & {name.partition("/")[0] for name in results}:
        print("\n" + format_modality_check(check_results(results, k=10, collapsed=collapsed), k=10))
    if embedder is not None:
        print(measure_truncation(embedder.processor(), NotesInOrder(notes, ids)).line())
    if baselines:
        print("\n" + report_baselines(baselines, results.get(MODEL_RUN), out / "results.json"))
    print(f"\nWrote {out / 'results.json'}, {out / 'results.csv'} and {out / 'spread.json'}"
          + (f"; TensorBoard: tensorboard --logdir {tb}" if tb else ""))
    return 0
