"""``python -m notellm2_pl index``: build a FAISS index over an embeddings directory and save it."""

from __future__ import annotations

import argparse

from notellm2_pl.data.schema import EMBEDDING_KEYS
from notellm2_pl.retrieval.faiss_index import INDEX_KINDS
from notellm2_pl.retrieval.search import build


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``index``."""
    p = argparse.ArgumentParser(
        prog="python -m notellm2_pl index",
        description="Build a FAISS inner-product index over an embeddings directory and save it "
                    "(INDEX, INDEX.ids.npy, INDEX.meta.json). Query it with `python -m notellm2_pl search`.",
        epilog="Example: python -m notellm2_pl index --embeddings runs/demo/embeddings/full "
               "--out runs/demo/index.faiss")
    p.add_argument("--embeddings", required=True, metavar="DIR", help="Embeddings directory (predict / evaluate "
                                                                       "--save_embeddings).")
    p.add_argument("--out", required=True, metavar="INDEX", help="Index file to write.")
    p.add_argument("--key", default=EMBEDDING_KEYS[0], choices=EMBEDDING_KEYS,
                   help="Embedding kind to index (default e_m).")
    p.add_argument("--kind", default="flat", choices=INDEX_KINDS, help="flat (exact, default), ivf or hnsw.")
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default round(4 sqrt(N))).")
    p.add_argument("--nprobe", type=int, default=16, help="IVF lists visited per query.")
    p.add_argument("--M", type=int, default=32, help="HNSW links per node.")
    p.add_argument("--ef_construction", type=int, default=200, help="HNSW build candidate list size.")
    p.add_argument("--ef_search", type=int, default=128, help="HNSW search candidate list size.")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``index``; returns the exit code."""
    args = build_parser().parse_args(argv)
    index = build(args.embeddings, args.out, args.key, args.kind, nlist=args.nlist, nprobe=args.nprobe, M=args.M,
                  ef_construction=args.ef_construction, ef_search=args.ef_search)
    print(f"Indexed {index.ntotal} notes ({args.key}, dim {index.dim}, {args.kind}) into {args.out}. Query it with: "
          f"python -m notellm2_pl search --index {args.out} --id NOTE_ID")
    return 0
