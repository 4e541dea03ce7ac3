"""``python -m notellm2_pl search``: top-k I2I neighbours of indexed notes (``--id``) or of a new note.

Prints each query's neighbours with scores and titles (titles from the dataset's notes tables); ``--title/--topics/
--content/--image`` with ``--model EXPORT_DIR`` searches for a new note instead. ``--json`` prints machine-readable
output.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from notellm2_pl.data.schema import EMBEDDING_KEYS
from notellm2_pl.inference.embedder import Embedder
from notellm2_pl.retrieval.faiss_index import IdIndex, load_index, set_search_params
from notellm2_pl.retrieval.search import format_neighbours, load_titles, neighbours, read_index_meta, stored_vectors


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``search``."""
    p = argparse.ArgumentParser(
        prog="python -m notellm2_pl search",
        description="Top-k I2I neighbours from a saved index: of existing notes (--id) or of a new note "
                    "(--title/--topics/--content/--image, embedded with --model EXPORT_DIR).",
        epilog="Examples:\n  python -m notellm2_pl search --index runs/demo/index.faiss --id n00012 --k 5\n"
               "  python -m notellm2_pl search --index runs/demo/index.faiss --model runs/demo/export "
               "--title 'red mug' --image photo.jpg --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True, help="Index file written by `python -m notellm2_pl index`.")
    p.add_argument("--id", action="append", default=[], metavar="NOTE_ID", help="Query note id (repeatable).")
    p.add_argument("--k", type=int, default=10, help="Neighbours per query (default 10).")
    p.add_argument("--model", metavar="EXPORT_DIR", help="Model export, to embed a new note.")
    p.add_argument("--title", default=None, help="New note: title.")
    p.add_argument("--topics", default="", help="New note: topics, separated by '|'.")
    p.add_argument("--content", default="", help="New note: content.")
    p.add_argument("--image", default=None, help="New note: image file.")
    p.add_argument("--data", metavar="ROOT", help="Dataset root for titles (default: the one recorded with the index).")
    p.add_argument("--nprobe", type=int, default=None, help="IVF: lists visited per query.")
    p.add_argument("--ef_search", type=int, default=None, help="HNSW: candidate list size.")
    p.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    return p


def _queries(p: argparse.ArgumentParser, args: argparse.Namespace, index: IdIndex, meta: dict[str, Any],
             titles: dict[str, str], new_note: bool) -> tuple[list[dict[str, Any]], np.ndarray]:
    """``(query descriptions, (Q, d) query vectors)``: the indexed notes of ``--id``, then the new note if any."""
    row_of = {str(nid): i for i, nid in enumerate(index.ids)}
    unknown = [i for i in args.id if i not in row_of]
    if unknown:
        p.error(f"note id(s) {unknown} are not in the index ({index.ntotal} notes). Index the notes first, or "
                f"search for them as new notes (--model with --title/--content/--image).")
    queries: list[dict[str, Any]] = [{"note_id": i, "title": titles.get(i)} for i in args.id]
    vecs = [stored_vectors(index, [row_of[i] for i in args.id])] if args.id else []
    if new_note:
        note = {"title": args.title or "", "topics": args.topics, "content": args.content, "image": args.image}
        key = meta.get("key", EMBEDDING_KEYS[0])
        vecs.append(Embedder.from_pretrained(args.model).embed([note], progress=False, key=key))
        queries.append({"note_id": None, "title": args.title or ""})
    q = np.concatenate(vecs).astype(np.float32)
    if q.shape[1] != index.dim:
        p.error(f"the model's embeddings have dim {q.shape[1]} but the index has dim {index.dim}: use the model "
                f"that produced the indexed embeddings.")
    return queries, q


def main(argv: list[str] | None = None) -> int:
    """Run ``search``; returns the exit code."""
    p = build_parser()
    args = p.parse_args(argv)
    new_note = bool(args.title is not None or args.content or args.image or args.topics)
    if not args.id and not new_note:
        p.error("give --id NOTE_ID, or a new note (--title/--topics/--content/--image with --model EXPORT_DIR).")
    if new_note and not args.model:
        p.error("a new note needs the model to embed it: add --model EXPORT_DIR (python -m notellm2_pl export).")
    index = load_index(args.index)
    if args.nprobe is not None or args.ef_search is not None:
        set_search_params(index, nprobe=args.nprobe, ef_search=args.ef_search)
    meta = read_index_meta(args.index)
    root = args.data or meta.get("data_root")
    titles = load_titles(root) if root else {}
    queries, q = _queries(p, args, index, meta, titles, new_note)
    hits = neighbours(index, q, args.k, exclude=[x["note_id"] for x in queries], titles=titles)
    results = [{"query": qu, "neighbours": h} for qu, h in zip(queries, hits)]
    if args.json:
        json.dump(results, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_neighbours(results))
    return 0
