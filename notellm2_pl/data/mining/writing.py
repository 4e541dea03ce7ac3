"""Writing mined pairs as a canonical dataset folder that ``load_split`` and ``fit --data.root`` read.

Files: ``notes_train.csv`` (notes of train and val pairs), ``notes_test.csv`` (the test pool),
``pairs_{train,val,test}.csv``, ``pairs_test_{shortquery,shortgtdoc,longquery,longgtdoc}.csv`` (by
:func:`~notellm2_pl.retrieval.pairs.derive_subsets`, as the evaluator derives them) and ``mining.json`` (settings
and the stage report). The folder is built aside and renamed into place (:func:`notellm2_pl.atomic.atomic_dir`).
Relative image paths of the catalogue are rewritten as absolute paths, so the new folder finds the images.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from notellm2_pl.atomic import atomic_dir
from notellm2_pl.data.mining.engines import write_rows
from notellm2_pl.data.schema import PAIR_COLUMNS
from notellm2_pl.retrieval.pairs import DEFAULT_LONG_MIN_CHARS, DEFAULT_SHORT_MAX_CHARS, Pair, derive_subsets

if TYPE_CHECKING:
    from notellm2_pl.data.mining.engines import Engine
    from notellm2_pl.data.mining.settings import MiningConfig, MiningReport


@dataclass
class MinedPairs:
    """Pairs after the split: val and test already through the at-most-once rule; train stays in the engine.

    Attributes:
        pool: Ids of the test pool (``notes_test``).
        val: Accepted val pairs.
        test: Accepted test pairs, best score first.
        train_count: Number of train pairs (table ``split_pairs``, period 0, in the engine).
    """

    pool: set[str]
    val: list[Pair] = field(default_factory=list)
    test: list[Pair] = field(default_factory=list)
    train_count: int = 0


def _notes_sql(where: str, image_root: Path) -> str:
    """Catalogue rows matching ``where`` with empty text for NULL and relative image paths made absolute."""
    root = str(image_root.resolve()).replace("'", "''")
    image = ("CASE WHEN image IS NULL THEN '' WHEN image = '' OR image LIKE '/%' OR image LIKE '%://%' THEN image "
             f"ELSE '{root}/' || image END AS image")
    return (f"SELECT note_id, COALESCE(title, '') AS title, COALESCE(topics, '') AS topics, COALESCE(content, '') "
            f"AS content, {image} FROM catalogue c WHERE {where} ORDER BY note_id")


def _raw_len_sql(notes_sql: str) -> str:
    """Raw text length per note, as :attr:`notellm2_pl.data.tables.Note.raw_len` counts it (topics without '|')."""
    return (f"SELECT note_id, LENGTH(title) + LENGTH(content) + LENGTH(REPLACE(topics, '|', '')) "
            f"FROM ({notes_sql}) x")


def write_dataset(engine: Engine, out: Path, pairs: MinedPairs, cfg: MiningConfig, report: MiningReport,
                  tables: list[Path], overwrite: bool, short_max_chars: int | None = None,
                  long_min_chars: int | None = None) -> None:
    """Write the dataset folder (see the module docstring) and record its row counts in ``report.outputs``.

    Args:
        engine: Engine holding ``catalogue``, ``split_pairs``, ``train_val_notes`` and ``pool``.
        out: Destination folder (built aside, renamed into place).
        pairs: Val/test pairs and the test pool.
        cfg: Settings, stored in ``mining.json``.
        report: Stage report, completed with the outputs and stored in ``mining.json``.
        tables: The catalogue's tables (relative image paths are resolved against the first one's folder).
        overwrite: Replace an existing ``out``.
        short_max_chars: Short-text threshold of the subsets.
        long_min_chars: Long-text threshold of the subsets.
    """
    image_root = tables[0].parent
    used = _notes_sql("EXISTS (SELECT 1 FROM train_val_notes u WHERE u.note_id = c.note_id)", image_root)
    pool = _notes_sql("EXISTS (SELECT 1 FROM pool p WHERE p.note_id = c.note_id)", image_root)
    lengths = {k: int(v) for k, v in engine.rows(_raw_len_sql(pool))}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        n = report.outputs
        n["notes_train"] = engine.write_csv(used, tmp / "notes_train.csv")
        n["notes_test"] = engine.write_csv(pool, tmp / "notes_test.csv")
        n["pairs_train"] = engine.write_csv("SELECT query_id, target_id FROM split_pairs WHERE period = 0 "
                                            "ORDER BY query_id, score DESC, target_id", tmp / "pairs_train.csv")
        n["pairs_val"] = write_rows(tmp / "pairs_val.csv", PAIR_COLUMNS, pairs.val)
        n["pairs_test"] = write_rows(tmp / "pairs_test.csv", PAIR_COLUMNS, pairs.test)
        subsets = derive_subsets(pairs.test, lengths, short_max_chars or DEFAULT_SHORT_MAX_CHARS,
                                 long_min_chars or DEFAULT_LONG_MIN_CHARS)
        for name, subset in subsets.items():
            n[f"pairs_test_{name}"] = write_rows(tmp / f"pairs_test_{name}.csv", PAIR_COLUMNS, subset)
        meta = {"settings": asdict(cfg), "engine": engine.dialect.name, "report": report.to_dict()}
        (tmp / "mining.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
