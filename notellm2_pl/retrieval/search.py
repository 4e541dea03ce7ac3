"""The ``index`` and ``search`` commands: a FAISS index over exported embeddings, and I2I top-k neighbours.

``python -m notellm2_pl index --embeddings DIR --out INDEX [--kind flat|ivf|hnsw]`` builds and saves the index
(``INDEX``, ``INDEX.ids.npy`` and ``INDEX.meta.json``, each written atomically).

``python -m notellm2_pl search --index INDEX --id NOTE_ID [--id ...]`` prints each note's top-k neighbours with
scores and titles (titles from the dataset's notes tables); ``--title/--topics/--content/--image`` with ``--model
EXPORT_DIR`` searches for a new note instead. ``--json`` prints machine-readable output.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def meta_path(index_path: str | os.PathLike[str]) -> Path:
    """Where :func:`build` records the index's provenance (embeddings dir, key, dataset root)."""
    p = Path(index_path)
    return p.with_name(p.name + ".meta.json")


def build(emb_dir: str | os.PathLike[str], out: str | os.PathLike[str], key: str = "e_m", kind: str = "flat",
          **index_kwargs: Any) -> Any:
    """Build an index over an embeddings directory and save it.

    Args:
        emb_dir: Embeddings directory (``predict`` with ``EmbeddingWriter``, or ``evaluate --save_embeddings``).
        out: Index file path.
        key: ``e_m`` or ``e_v``.
        kind: ``flat`` (exact), ``ivf`` or ``hnsw``.
        **index_kwargs: Passed to :func:`notellm2_pl.retrieval.faiss_index.build_index` (``nlist``, ``nprobe``, ``M``...).

    Returns:
        The :class:`~notellm2_pl.retrieval.faiss_index.IdIndex`.
    """
    from notellm2_pl.retrieval.faiss_index import build_index, save_index
    from notellm2_pl.retrieval.prediction_writer import load_embeddings, read_meta, write_json

    meta = read_meta(emb_dir)
    ids, emb = load_embeddings(emb_dir, key)
    index = build_index(emb, kind, np.asarray(ids, dtype=str), **index_kwargs)
    save_index(index, out)
    write_json(meta_path(out), {"embeddings": str(Path(emb_dir).resolve()), "key": key, "kind": kind,
                                "ntotal": index.ntotal, "dim": index.dim, "probe": meta.get("probe"),
                                "split": meta.get("split"), "data_root": meta.get("data_root")})
    return index


def load_titles(root: str | os.PathLike[str], splits: Sequence[str] = ("test", "train")) -> dict[str, str]:
    """Note id -> title from a dataset's notes tables (test first)."""
    from notellm2_pl.data.tables import load_split

    titles: dict[str, str] = {}
    for split in splits:
        try:
            notes = load_split(root, split, on_error="skip").notes
        except (FileNotFoundError, ValueError) as err:
            log.info("No %s notes for titles in %s: %s", split, root, err)
            continue
        for nid, note in notes.items():
            titles.setdefault(nid, note.title)
    return titles


def _reconstruct(index: Any, rows: Sequence[int]) -> np.ndarray:
    """Stored vectors of some rows (flat, HNSW and IVF-flat indexes)."""
    import faiss

    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexIVF):
        inner.make_direct_map()
    return np.stack([inner.reconstruct(int(r)) for r in rows]).astype(np.float32)


def neighbours(index: Any, queries: np.ndarray, k: int, exclude: Sequence[str | None] | None = None,
               titles: Mapping[str, str] | None = None) -> list[list[dict[str, Any]]]:
    """Top-k neighbours of each query row, best first, optionally excluding each query's own id.

    Returns:
        Per query, a list of ``{"rank", "note_id", "score", "title"}``.
    """
    from notellm2_pl.retrieval.faiss_index import search

    scores, ids = search(index, queries, k + (1 if exclude else 0))
    out: list[list[dict[str, Any]]] = []
    for qi in range(len(queries)):
        own = exclude[qi] if exclude else None
        hits = []
        for s, nid in zip(scores[qi], ids[qi]):
            nid = str(nid)
            if nid == own or nid == "" or not np.isfinite(s):
                continue
            hits.append({"rank": len(hits) + 1, "note_id": nid, "score": float(s),
                         "title": (titles or {}).get(nid)})
            if len(hits) == k:
                break
        out.append(hits)
    return out


def _format(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        q = r["query"]
        label = q.get("note_id") or "(new note)"
        lines.append(f"query {label}: {q.get('title') or ''}")
        width = max([len(h["note_id"]) for h in r["neighbours"]] + [7])
        lines.append(f"  {'rank':>4}  {'score':>7}  {'note_id':<{width}}  title")
        for h in r["neighbours"]:
            lines.append(f"  {h['rank']:>4}  {h['score']:>7.4f}  {h['note_id']:<{width}}  {h['title'] or ''}")
        lines.append("")
    return "\n".join(lines).rstrip()


# ------------------------------------------------------------------------------------------------ CLIs
def index_main(argv: list[str] | None = None) -> int:
    """``python -m notellm2_pl index``; run with ``--help``."""
    from notellm2_pl.retrieval.faiss_index import INDEX_KINDS

    p = argparse.ArgumentParser(
        prog="python -m notellm2_pl index",
        description="Build a FAISS inner-product index over an embeddings directory and save it "
                    "(INDEX, INDEX.ids.npy, INDEX.meta.json). Query it with `python -m notellm2_pl search`.",
        epilog="Example: python -m notellm2_pl index --embeddings runs/demo/embeddings/full --out runs/demo/index.faiss")
    p.add_argument("--embeddings", required=True, metavar="DIR", help="Embeddings directory (predict / evaluate "
                                                                       "--save_embeddings).")
    p.add_argument("--out", required=True, metavar="INDEX", help="Index file to write.")
    p.add_argument("--key", default="e_m", choices=("e_m", "e_v"), help="Embedding kind to index (default e_m).")
    p.add_argument("--kind", default="flat", choices=INDEX_KINDS, help="flat (exact, default), ivf or hnsw.")
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default round(4 sqrt(N))).")
    p.add_argument("--nprobe", type=int, default=16, help="IVF lists visited per query.")
    p.add_argument("--M", type=int, default=32, help="HNSW links per node.")
    p.add_argument("--ef_construction", type=int, default=200, help="HNSW build candidate list size.")
    p.add_argument("--ef_search", type=int, default=128, help="HNSW search candidate list size.")
    args = p.parse_args(argv)
    index = build(args.embeddings, args.out, args.key, args.kind, nlist=args.nlist, nprobe=args.nprobe, M=args.M,
                  ef_construction=args.ef_construction, ef_search=args.ef_search)
    print(f"Indexed {index.ntotal} notes ({args.key}, dim {index.dim}, {args.kind}) into {args.out}. Query it with: "
          f"python -m notellm2_pl search --index {args.out} --id NOTE_ID")
    return 0


def cli_main(argv: list[str] | None = None) -> int:
    """``python -m notellm2_pl search``; run with ``--help``."""
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
    args = p.parse_args(argv)
    new_note = args.title is not None or args.content or args.image or args.topics
    if not args.id and not new_note:
        p.error("give --id NOTE_ID, or a new note (--title/--topics/--content/--image with --model EXPORT_DIR).")
    if new_note and not args.model:
        p.error("a new note needs the model to embed it: add --model EXPORT_DIR (python -m notellm2_pl export).")

    from notellm2_pl.retrieval.faiss_index import load_index, set_search_params

    index = load_index(args.index)
    if args.nprobe is not None or args.ef_search is not None:
        set_search_params(index, nprobe=args.nprobe, ef_search=args.ef_search)
    meta = json.loads(meta_path(args.index).read_text()) if meta_path(args.index).is_file() else {}
    root = args.data or meta.get("data_root")
    titles = load_titles(root) if root else {}
    row_of = {str(nid): i for i, nid in enumerate(index.ids)}
    unknown = [i for i in args.id if i not in row_of]
    if unknown:
        p.error(f"note id(s) {unknown} are not in the index ({index.ntotal} notes). Index the notes first, or "
                f"search for them as new notes (--model with --title/--content/--image).")
    queries: list[dict[str, Any]] = [{"note_id": i, "title": titles.get(i)} for i in args.id]
    vecs = [_reconstruct(index, [row_of[i] for i in args.id])] if args.id else []
    if new_note:
        from notellm2_pl.inference.export import Embedder

        note = {"title": args.title or "", "topics": args.topics, "content": args.content, "image": args.image}
        key = meta.get("key", "e_m")
        vecs.append(Embedder.from_pretrained(args.model).embed([note], progress=False, key=key))
        queries.append({"note_id": None, "title": args.title or ""})
    q = np.concatenate(vecs).astype(np.float32)
    if q.shape[1] != index.dim:
        p.error(f"the model's embeddings have dim {q.shape[1]} but the index has dim {index.dim}: use the model "
                f"that produced the indexed embeddings.")
    hits = neighbours(index, q, args.k, exclude=[x["note_id"] for x in queries], titles=titles)
    results = [{"query": qu, "neighbours": h} for qu, h in zip(queries, hits)]
    if args.json:
        json.dump(results, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        print(_format(results))
    return 0
