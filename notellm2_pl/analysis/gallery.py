"""See what the model retrieves: queries with their top-k neighbours as a PNG sheet and a self-contained HTML page.

Each row is one query of the test pairs: the query note, its top-k neighbours (image, title, score) and its
ground-truth target marked: green when the target is among the top-k (a hit), and appended in red with its rank when
it is not (a miss). The pool is the Recall@K pool (docs/method.md#recall-at-k): every note minus the accepted
queries, so a hit here is a hit of Recall@k. Neighbours come from the shared exact kernel
(:func:`~notellm2_pl.retrieval.scoring.exact_topk`), target ranks from
:func:`~notellm2_pl.retrieval.ranking.rank_targets`.
"""

from __future__ import annotations

import base64
import html
import io
import os
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from notellm2_pl.atomic import atomic_open, atomic_write_text
from notellm2_pl.data.tables import Note
from notellm2_pl.retrieval.catalogue import Catalogue
from notellm2_pl.retrieval.pairs import Pair, accept_pairs
from notellm2_pl.retrieval.ranking import rank_targets
from notellm2_pl.retrieval.scoring import exact_topk

HIT, MISS, QUERY, OTHER = "#1a9850", "#d73027", "#4575b4", "#bbbbbb"
"""Frame colours: target found in the top-k, target outside it, the query, any other neighbour."""


@dataclass
class GalleryRow:
    """One query and what the model retrieved for it.

    Attributes:
        query: Query note id.
        target: Ground-truth target note id.
        neighbours: Top-k ``(note id, score)``, best first.
        target_rank: 1-based expected rank of the target in the pool, ties broken at random (docs/method.md#ties).
        target_score: The target's score.
    """

    query: str
    target: str
    neighbours: list[tuple[str, float]]
    target_rank: int
    target_score: float

    @property
    def hit(self) -> bool:
        """The target is among the shown neighbours."""
        return any(nid == self.target for nid, _ in self.neighbours)


def gallery_rows(cat: Catalogue, pairs: Sequence[Pair], k: int = 8, num_queries: int = 8,
                 seed: int | None = None) -> list[GalleryRow]:
    """Top-k neighbours and target rank of some queries (the first accepted pairs, or a seeded sample).

    Args:
        cat: The embedded notes.
        pairs: ``(query id, target id)`` pairs in file order (the Recall@K acceptance rule applies).
        k: Neighbours per query.
        num_queries: Queries shown.
        seed: Sample the queries with this seed; ``None`` takes the first accepted pairs.

    Returns:
        One :class:`GalleryRow` per query.
    """
    row_of = {nid: i for i, nid in enumerate(cat.ids)}
    accepted = accept_pairs(pairs, row_of.keys())
    in_pool = np.ones(len(cat.ids), dtype=bool)
    in_pool[[row_of[q] for q, _ in accepted]] = False
    pool = np.flatnonzero(in_pool)
    if seed is None:
        shown = accepted[:num_queries]
    else:
        pick = np.random.default_rng(seed).choice(len(accepted), min(num_queries, len(accepted)), replace=False)
        shown = [accepted[i] for i in sorted(pick)]
    if not shown:
        return []
    q_rows = np.array([row_of[q] for q, _ in shown])
    t_rows = np.array([row_of[t] for _, t in shown])
    queries = np.ascontiguousarray(cat.emb[q_rows])
    scores, rows = exact_topk(queries, cat.emb, k, pool_rows=pool)
    ranks = rank_targets(queries, t_rows, cat.emb, pool)
    t_scores = np.einsum("qd,qd->q", queries, cat.emb[t_rows])  # (Q,)
    return [GalleryRow(q, t, [(cat.ids[r], float(s)) for r, s in zip(rows[i], scores[i]) if r >= 0],
                       int(ranks.expected[i]) + 1, float(t_scores[i])) for i, (q, t) in enumerate(shown)]


def thumbnail(note: Note | None, size: int = 128) -> Image.Image:
    """The note's image as an RGB square thumbnail (grey when the note has no readable image)."""
    img = None
    try:
        if note is not None and note.image_bytes:
            img = Image.open(io.BytesIO(note.image_bytes))
        elif note is not None and note.image and os.path.isfile(note.image):
            img = Image.open(note.image)
    except OSError:
        img = None
    if img is None:
        return Image.new("RGB", (size, size), (200, 200, 200))
    img = img.convert("RGB")
    img.thumbnail((size, size))
    square = Image.new("RGB", (size, size), (255, 255, 255))
    square.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return square


def _cells(row: GalleryRow) -> list[tuple[str, str, str]]:
    """``(note id, caption, frame colour)`` of each cell of a row: query, neighbours, then a missed target."""
    cells = [(row.query, "query", QUERY)]
    for rank, (nid, score) in enumerate(row.neighbours, start=1):
        colour = HIT if nid == row.target else OTHER
        cells.append((nid, f"#{rank}  {score:.3f}" + ("  target" if nid == row.target else ""), colour))
    if not row.hit:
        cells.append((row.target, f"target: rank {row.target_rank}  {row.target_score:.3f}", MISS))
    return cells


def render_png(rows: Sequence[GalleryRow], notes: Mapping[str, Note], path: str | os.PathLike[str],
               thumb: int = 96) -> Path:
    """Draw the gallery as one PNG sheet (rows = queries), written atomically.

    Args:
        rows: From :func:`gallery_rows`.
        notes: Note id -> note (titles and images).
        path: Output PNG.
        thumb: Thumbnail size in pixels.

    Returns:
        The path.
    """
    import matplotlib  # heavy and optional: only the PNG needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = max([len(_cells(r)) for r in rows] + [1])
    fig, axes = plt.subplots(max(len(rows), 1), ncols, figsize=(1.9 * ncols, 2.3 * max(len(rows), 1)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, row in enumerate(rows):
        for j, (nid, caption, colour) in enumerate(_cells(row)):
            ax = axes[i, j]
            note = notes.get(nid)
            ax.imshow(thumbnail(note, thumb))
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(4 if colour != OTHER else 1)
            title = textwrap.shorten(note.title if note else nid, 40, placeholder="...")
            ax.set_title("\n".join(textwrap.wrap(title, 20)[:2]) + f"\n{caption}", fontsize=7, color=colour
                         if colour != OTHER else "black")
    hits = sum(r.hit for r in rows)
    fig.suptitle(f"{len(rows)} queries, top-{len(rows[0].neighbours) if rows else 0}: {hits} hits (green), "
                 f"{len(rows) - hits} misses (target in red)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # leave the top strip to the title
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


def _data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def render_html(rows: Sequence[GalleryRow], notes: Mapping[str, Note], path: str | os.PathLike[str],
                thumb: int = 128) -> Path:
    """Write the gallery as one self-contained HTML page (images inlined as base64 PNG), atomically.

    Returns:
        The path.
    """
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>notellm2 gallery</title><style>",
             "body{font-family:sans-serif} td{vertical-align:top;width:140px;font-size:12px;padding:4px}",
             "img{display:block;border:4px solid}</style></head><body>",
             f"<h1>Top-{len(rows[0].neighbours) if rows else 0} neighbours of {len(rows)} queries</h1>",
             (f"<p>{sum(r.hit for r in rows)} hits. Frames: <b style='color:{QUERY}'>query</b>, "
              f"<b style='color:{HIT}'>target found</b>, <b style='color:{MISS}'>target missed (its rank)</b>.</p>"),
             "<table>"]
    for row in rows:
        parts.append(f"<tr><th colspan='99' align='left'>{html.escape(row.query)} &rarr; target "
                     f"{html.escape(row.target)}: {'hit' if row.hit else 'miss'}</th></tr><tr>")
        for nid, caption, colour in _cells(row):
            note = notes.get(nid)
            title = html.escape(note.title if note else nid)
            parts.append(f"<td><img src='{_data_uri(thumbnail(note, thumb))}' style='border-color:{colour}' "
                         f"alt='{html.escape(nid)}'>{title}<br><small>{html.escape(nid)} {html.escape(caption)}"
                         f"</small></td>")
        parts.append("</tr>")
    parts.append("</table></body></html>\n")
    atomic_write_text(path, "\n".join(parts))
    return Path(path)
