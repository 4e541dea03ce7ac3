"""``python -m notellm2_pl neighbours``: every note's top-k neighbours as a sharded, resumable Parquet table.

The notes come from an embeddings directory (``--embeddings``) or are embedded from a dataset with a model export
(``--model EXPORT --data ROOT``). ``--update`` updates an existing exact table in place: with ``--model --data`` only
the notes that are new or whose content changed are embedded (notes gone from the dataset are removed); with
``--embeddings`` the directory holds the new/changed notes' vectors and ``--remove`` names removed notes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from notellm2_pl.data.schema import EMBEDDING_KEYS
from notellm2_pl.inference.embedder import Embedder
from notellm2_pl.retrieval.catalogue import (
    Catalogue,
    changed_notes,
    dataset_notes,
    embed_catalogue,
    load_catalogue,
)
from notellm2_pl.retrieval.neighbour_table import METHODS, TableSettings, build_table
from notellm2_pl.retrieval.neighbour_update import table_catalogue, update_table


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``neighbours``."""
    p = argparse.ArgumentParser(
        prog="python -m notellm2_pl neighbours",
        description="Write every note's top-k neighbours (note_id, rank, neighbour_id, score) as Parquet parts; "
                    "a rerun resumes, --update applies new/changed/removed notes.",
        epilog="Examples:\n"
               "  python -m notellm2_pl neighbours --embeddings runs/demo/embeddings/full --out runs/demo/nbrs\n"
               "  python -m notellm2_pl neighbours --model runs/demo/export --data data/synth --out runs/demo/nbrs "
               "--method hnsw --k 20\n"
               "  python -m notellm2_pl neighbours --update --model runs/demo/export --data data/synth "
               "--out runs/demo/nbrs",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="Table directory (parts/, meta.json, embeddings/).")
    p.add_argument("--embeddings", metavar="DIR", help="Embeddings directory (predict / evaluate --save_embeddings).")
    p.add_argument("--model", metavar="EXPORT_DIR", help="Model export to embed the dataset's notes with.")
    p.add_argument("--data", metavar="ROOT", help="Dataset root (with --model).")
    p.add_argument("--split", default="test", help="Split of the dataset whose notes form the catalogue.")
    p.add_argument("--key", default=EMBEDDING_KEYS[0], choices=EMBEDDING_KEYS, help="Embedding kind.")
    p.add_argument("--k", type=int, default=10, help="Neighbours per note (default 10).")
    p.add_argument("--method", default="exact", choices=METHODS, help="exact (tiled kernel), ivf or hnsw (FAISS).")
    p.add_argument("--shard_notes", type=int, default=100_000, help="Notes per Parquet part.")
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default 4 sqrt(N)).")
    p.add_argument("--nprobe", type=int, default=16, help="IVF lists visited per query.")
    p.add_argument("--M", type=int, default=32, help="HNSW neighbours per node.")
    p.add_argument("--ef_search", type=int, default=128, help="HNSW search candidates.")
    p.add_argument("--recall_sample", type=int, default=1000,
                   help="Notes on which an approximate table's recall@k against exact is measured (0: skip).")
    p.add_argument("--batch_size", type=int, default=32, help="Notes per forward pass (with --model).")
    p.add_argument("--overwrite", action="store_true", help="Replace a table of other notes/settings in --out.")
    p.add_argument("--update", action="store_true", help="Update the exact table in --out incrementally.")
    p.add_argument("--remove", action="append", default=[], metavar="NOTE_ID",
                   help="With --update --embeddings: a removed note (repeatable).")
    return p


def _index_settings(args: argparse.Namespace) -> dict[str, Any]:
    if args.method == "ivf":
        return {"nlist": args.nlist, "nprobe": args.nprobe}
    if args.method == "hnsw":
        return {"M": args.M, "ef_search": args.ef_search}
    return {}


def _full_catalogue(args: argparse.Namespace) -> Catalogue:
    if args.embeddings:
        return load_catalogue(args.embeddings, args.key)
    notes = dataset_notes(args.data, args.split)
    return embed_catalogue(Embedder.from_pretrained(args.model), notes.values(), args.key, args.batch_size)


def _update(args: argparse.Namespace) -> dict[str, Any]:
    if args.embeddings:
        return update_table(args.out, load_catalogue(args.embeddings, args.key), args.remove)
    notes = dataset_notes(args.data, args.split)
    todo, removed = changed_notes(notes, table_catalogue(args.out))
    print(f"{len(todo)} new or changed note(s) to embed, {len(removed)} removed")
    updates = embed_catalogue(Embedder.from_pretrained(args.model), todo, args.key, args.batch_size) if todo else \
        Catalogue([], table_catalogue(args.out).emb[:0])
    return update_table(args.out, updates, removed)


def main(argv: list[str] | None = None) -> int:
    """Run ``neighbours``; returns the exit code."""
    p = build_parser()
    args = p.parse_args(argv)
    if bool(args.embeddings) == bool(args.model):
        p.error("give the notes as --embeddings DIR, or as --model EXPORT_DIR with --data ROOT (one of the two).")
    if args.model and not args.data:
        p.error("--model needs --data ROOT: the dataset whose notes to embed.")
    if args.update and args.method != "exact":
        p.error("--update needs the exact method (incremental updates of approximate tables are not exact).")
    if args.remove and not (args.update and args.embeddings):
        p.error("--remove applies to --update --embeddings; with --data, removed notes are those gone from it.")
    if args.update:
        if not (Path(args.out) / "meta.json").is_file():
            p.error(f"--update needs an existing table in {args.out}; build it first (without --update).")
        meta = _update(args)
    else:
        settings = TableSettings(k=args.k, method=args.method, shard_notes=args.shard_notes,
                                 index=_index_settings(args))
        meta = build_table(_full_catalogue(args), args.out, settings, recall_sample=args.recall_sample,
                           overwrite=args.overwrite)
    summary = {key: meta.get(key) for key in ("k", "method", "num_notes", "generation", "approx_recall", "update")}
    summary["parts"] = len(meta["parts"])
    print(json.dumps({key: v for key, v in summary.items() if v is not None}, indent=2))
    if meta.get("approx_recall"):
        r = meta["approx_recall"]
        print(f"recall@{r['k']} of {meta['method']} against exact on {r['sample']} notes: {r['recall']:.4f}")
    return 0
