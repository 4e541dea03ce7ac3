"""``python -m notellm2_pl gallery``: queries with their top-k neighbours as a PNG sheet and an HTML page.

The notes (titles, images) and the query/target pairs come from a dataset's test split (``--data``); the embeddings
from an embeddings directory (``--embeddings``) or a model export (``--model``, embeds the test notes).
``--projector`` also writes the TensorBoard embedding projector (``tensorboard --logdir OUT/projector``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from notellm2_pl.analysis.gallery import gallery_rows, render_html, render_png
from notellm2_pl.analysis.projector import write_projector
from notellm2_pl.data.schema import ALL_PAIRS, EMBEDDING_KEYS
from notellm2_pl.inference.embedder import Embedder
from notellm2_pl.retrieval.catalogue import Catalogue, embed_catalogue, load_catalogue
from notellm2_pl.retrieval.evaluation import load_test_pool


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``gallery``."""
    p = argparse.ArgumentParser(
        prog="python -m notellm2_pl gallery",
        description="Render test queries with their top-k neighbours (target marked: green hit, red miss) as "
                    "OUT/gallery.png and a self-contained OUT/gallery.html; --projector adds the TensorBoard "
                    "embedding projector in OUT/projector.",
        epilog="Examples:\n  python -m notellm2_pl gallery --model runs/demo/export --data data/synthetic --out "
               "runs/demo/gallery --projector\n"
               "  python -m notellm2_pl gallery --embeddings runs/demo/embeddings/full --data data/synthetic "
               "--out runs/demo/gallery --k 5 --queries 6 --seed 0",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="ROOT", help="Dataset root: test notes and pairs.")
    p.add_argument("--embeddings", metavar="DIR", help="Embeddings directory of the test notes.")
    p.add_argument("--model", metavar="EXPORT_DIR", help="Model export: embeds the test notes.")
    p.add_argument("--key", default=EMBEDDING_KEYS[0], choices=EMBEDDING_KEYS, help="Embedding kind.")
    p.add_argument("--out", required=True, help="Output directory.")
    p.add_argument("--png", default=None, help="PNG path (default OUT/gallery.png).")
    p.add_argument("--k", type=int, default=8, help="Neighbours per query (default 8).")
    p.add_argument("--queries", type=int, default=8, help="Queries shown (0: no gallery, e.g. projector only).")
    p.add_argument("--seed", type=int, default=None, help="Sample the queries (default: the first test pairs).")
    p.add_argument("--projector", action="store_true", help="Also write the TensorBoard embedding projector.")
    p.add_argument("--max_notes", type=int, default=10_000, help="Projector: notes kept (seeded sample).")
    p.add_argument("--batch_size", type=int, default=32, help="Notes per forward pass (with --model).")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``gallery``; returns the exit code."""
    p = build_parser()
    args = p.parse_args(argv)
    if bool(args.embeddings) == bool(args.model):
        p.error("give the embeddings as --embeddings DIR or a model as --model EXPORT_DIR (one of the two).")
    if args.k <= 0 or args.queries < 0:
        p.error("--k must be positive and --queries non-negative.")
    ids, notes, pair_sets = load_test_pool(args.data, on_error="skip")
    if args.embeddings:
        cat: Catalogue = load_catalogue(args.embeddings, args.key)
    else:
        cat = embed_catalogue(Embedder.from_pretrained(args.model), [notes[i] for i in ids], args.key,
                              args.batch_size)
    out = Path(args.out)
    if args.queries:
        rows = gallery_rows(cat, pair_sets[ALL_PAIRS], args.k, args.queries, args.seed)
        png = render_png(rows, notes, args.png or out / "gallery.png")
        page = render_html(rows, notes, out / "gallery.html")
        print(f"{sum(r.hit for r in rows)}/{len(rows)} queries find their target in the top {args.k}")
        print(f"wrote {png} and {page}")
    if args.projector:
        log_dir = write_projector(cat, notes, out / "projector", max_notes=args.max_notes)
        print(f"wrote the embedding projector: tensorboard --logdir {log_dir}")
    return 0
