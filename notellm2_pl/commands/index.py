"""``python -m notellm2_pl index``: build a FAISS index over an embeddings directory and save it.

With ``--live`` it builds the live index ``serve`` reads and writes instead (LanceDB: a directory or an object-store
URI; :mod:`notellm2_pl.retrieval.live_index`).
"""

from __future__ import annotations

import argparse

from notellm2_pl.data.schema import EMBEDDING_KEYS
from notellm2_pl.retrieval.faiss_index import INDEX_KINDS
from notellm2_pl.retrieval.live_index import ANN_KINDS, build_live, build_live_from_model
from notellm2_pl.retrieval.search import build


def key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` as a pair (an argparse ``type``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``index``."""
    p = argparse.ArgumentParser(
        prog="python -m notellm2_pl index",
        description="Build a FAISS inner-product index over an embeddings directory and save it "
                    "(INDEX, INDEX.ids.npy, INDEX.meta.json). Query it with `python -m notellm2_pl search`.",
        epilog="Example: python -m notellm2_pl index --embeddings runs/demo/embeddings/full "
               "--out runs/demo/index.faiss")
    p.add_argument("--embeddings", metavar="DIR", help="Embeddings directory (predict / evaluate "
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
    p.add_argument("--live", action="store_true", help="Build the live index of `serve` (LanceDB) at --out (a "
                                                       "directory or s3://... URI); --kind flat (exact) or ivf.")
    p.add_argument("--data", metavar="ROOT", help="--live: dataset root for titles and categories (default: the "
                                                  "one recorded with the embeddings).")
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE", type=key_value,
                   help="--live: object-store option of --out (repeatable), e.g. region=eu-west-1.")
    p.add_argument("--model", metavar="EXPORT_DIR", help="--live without --embeddings: embed the notes of --data "
                                                         "(test and train tables) with this export.")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``index``; returns the exit code."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.live and args.kind not in ANN_KINDS:
        p.error(f"--live supports --kind {' or '.join(ANN_KINDS)}, not {args.kind}.")
    if not args.embeddings and not (args.live and args.model and args.data):
        p.error("give --embeddings DIR, or (with --live) --model EXPORT_DIR --data ROOT to embed a dataset's notes.")
    if args.live:
        opts = dict(args.storage_option)
        live = (build_live(args.embeddings, args.out, args.key, args.kind, args.data, opts) if args.embeddings else
                build_live_from_model(args.model, args.data, args.out, kind=args.kind, storage_options=opts))
        print(f"Live index of {len(live)} notes ({live.key}, dim {live.dim}, {args.kind}) at {args.out}. Serve it "
              f"with: python -m notellm2_pl serve --model {args.model or 'EXPORT_DIR'} --index {args.out}")
        return 0
    index = build(args.embeddings, args.out, args.key, args.kind, nlist=args.nlist, nprobe=args.nprobe, M=args.M,
                  ef_construction=args.ef_construction, ef_search=args.ef_search)
    print(f"Indexed {index.ntotal} notes ({args.key}, dim {index.dim}, {args.kind}) into {args.out}. Query it with: "
          f"python -m notellm2_pl search --index {args.out} --id NOTE_ID")
    return 0
