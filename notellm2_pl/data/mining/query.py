"""The mining query, defined once as SQL text that DuckDB and Spark SQL both run unchanged.

Every stage is a ``(name, SELECT ...)`` pair; an engine materialises each under its name, in order. Only two things
differ between the engines (the string type's name and how a timestamp text becomes epoch seconds) and they live
in :class:`Dialect`. Definitions: docs/data.md#mining-pairs-from-behaviour-logs.

Tables the engine registers before the stages run:

* ``raw_events(user_id, note_id, ts_text, action, row_no)``: the log as read, every column text but ``row_no``
  (file order); ``action`` is NULL when the log has no action column.
* ``catalogue_ids(note_id)``: the ids of the catalogue's notes.
"""

from __future__ import annotations

from dataclasses import dataclass

from notellm2_pl.data.mining.settings import MiningConfig

Stages = list[tuple[str, str]]
"""``[(table name, SELECT statement), ...]`` in execution order."""

PERIODS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
"""Period code of each split in the ``period`` column."""


@dataclass(frozen=True)
class Dialect:
    """What differs between the engines' SQL.

    Attributes:
        name: ``duckdb`` or ``spark``.
        string: Name of the text type.
        text_timestamp: Expression turning a timestamp text ``{x}`` into epoch seconds (NULL when it cannot).
    """

    name: str
    string: str
    text_timestamp: str


DUCKDB = Dialect("duckdb", "VARCHAR", "epoch(TRY_CAST({x} AS TIMESTAMP))")
SPARK = Dialect("spark", "STRING", "CAST(TRY_CAST({x} AS TIMESTAMP) AS DOUBLE)")

_MAX_EPOCH = 1e12
"""Parsed times outside +-this many seconds (and NaN) count as unparsable."""


def _in_list(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def event_stages(cfg: MiningConfig, d: Dialect) -> Stages:
    """Validation stages: parse times, keep known notes and mined actions, drop users with one event.

    Args:
        cfg: Mining settings (action types).
        d: The engine's dialect.

    Returns:
        Stages ``parsed`` (every row, ``ts`` NULL when unparsable), ``valid`` (ids and time present), ``known``
        (note in the catalogue), ``typed`` (a view or click action, with ``is_view``/``is_click``) and
        ``multi`` (users with at least two events).
    """
    number = "TRY_CAST(ts_text AS DOUBLE)"
    parsed_ts = f"COALESCE({number}, {d.text_timestamp.format(x='ts_text')})"
    views, clicks = _in_list(cfg.view_actions), _in_list(cfg.click_actions)
    return [
        ("parsed", (f"SELECT NULLIF(TRIM(user_id), '') AS user_id, NULLIF(TRIM(note_id), '') AS note_id, "
                   f"{parsed_ts} AS ts, TRIM(action) AS action, row_no FROM raw_events")),
        ("valid", (f"SELECT user_id, note_id, ts, action, row_no FROM parsed WHERE user_id IS NOT NULL "
                  f"AND note_id IS NOT NULL AND ts BETWEEN {-_MAX_EPOCH} AND {_MAX_EPOCH}")),
        ("known", "SELECT v.* FROM valid v WHERE EXISTS (SELECT 1 FROM catalogue_ids c WHERE c.note_id = v.note_id)"),
        ("typed", (f"SELECT user_id, note_id, ts, row_no, "
                  f"(action IS NULL OR action IN ({views})) AS is_view, "
                  f"(action IS NULL OR action IN ({clicks})) AS is_click FROM known "
                  f"WHERE action IS NULL OR action IN ({views}) OR action IN ({clicks})")),
        ("multi", ("SELECT t.* FROM typed t JOIN (SELECT user_id FROM typed GROUP BY user_id HAVING COUNT(*) >= 2) u "
                  "ON t.user_id = u.user_id")),
    ]


def out_of_order_sql() -> str:
    """Count of valid events whose time is earlier than the user's previous event in file order (kept, sorted)."""
    return ("SELECT COUNT(*) FROM (SELECT ts, LAG(ts) OVER (PARTITION BY user_id ORDER BY row_no) AS prev_ts "
            "FROM valid) w WHERE w.ts < w.prev_ts")


def periods_stage(val_start: float, test_start: float) -> Stages:
    """Stage ``events``: the kept events with their period (0 train, 1 val, 2 test) by time."""
    return [("events", (f"SELECT user_id, note_id, ts, is_view, is_click, CASE WHEN ts >= {test_start!r} THEN 2 "
                       f"WHEN ts >= {val_start!r} THEN 1 ELSE 0 END AS period FROM multi"))]


def cooccurrence_stages(cfg: MiningConfig) -> Stages:
    """The co-occurrence mining of NoteLLM, per period: score, bounds, top-t.

    ``s(A->B) = sum over users who viewed A and later (within the window, same period) clicked B of 1/N_user``,
    ``N_user`` = distinct notes the user clicked in the period; a user counts once per pair. Pairs with fewer than
    ``min_support`` users, a score above ``upper`` or below ``lower`` are dropped; each query note keeps its
    ``top_t`` best targets (ties: smaller target id first). Scores are rounded to 12 decimals so that every engine
    ranks equal scores alike.

    Args:
        cfg: Mining settings.

    Returns:
        Stages ``clicks``, ``cooc``, ``scored``, ``supported``, ``under_upper``, ``bounded``, ``top``.
    """
    directed = ("SELECT DISTINCT a.period, a.user_id, a.note_id AS query_id, b.note_id AS target_id "
                "FROM events a JOIN events b ON a.user_id = b.user_id AND a.period = b.period "
                f"AND b.ts > a.ts AND b.ts <= a.ts + {float(cfg.window_s)!r} "
                "WHERE a.is_view AND b.is_click AND a.note_id <> b.note_id")
    cooc = directed
    if cfg.symmetric:
        cooc = (f"SELECT period, user_id, query_id, target_id FROM ({directed}) d UNION "
                f"SELECT period, user_id, target_id AS query_id, query_id AS target_id FROM ({directed}) r")
    return [
        ("clicks", ("SELECT period, user_id, COUNT(DISTINCT note_id) AS n_clicked FROM events WHERE is_click "
                   "GROUP BY period, user_id")),
        ("cooc", cooc),
        ("scored", ("SELECT c.period, c.query_id, c.target_id, "
                   "ROUND(SUM(CAST(1 AS DOUBLE) / k.n_clicked), 12) AS score, COUNT(*) AS support "
                   "FROM cooc c JOIN clicks k ON c.period = k.period AND c.user_id = k.user_id "
                   "GROUP BY c.period, c.query_id, c.target_id")),
        ("supported", f"SELECT * FROM scored WHERE support >= {int(cfg.min_support)}"),
        ("under_upper", f"SELECT * FROM supported WHERE score <= {float(cfg.upper)!r}"),
        ("bounded", f"SELECT * FROM under_upper WHERE score >= {float(cfg.lower)!r}"),
        ("top", ("SELECT period, query_id, target_id, score, support FROM (SELECT *, ROW_NUMBER() OVER "
                "(PARTITION BY period, query_id ORDER BY score DESC, target_id ASC) AS rnk FROM bounded) r "
                f"WHERE rnk <= {int(cfg.top_t)}")),
    ]


def split_stages(cold_start: bool) -> Stages:
    """Stages ``train_notes``, ``split_pairs`` (train pairs as mined; val/test pairs, in cold-start mode only those
    of new notes) and ``train_val_notes`` (the notes of ``notes_train``).

    In cold-start mode a val or test pair is dropped when either note is in any train pair, so no evaluated note
    was ever seen in training.
    """
    train_notes = ("SELECT query_id AS note_id FROM top WHERE period = 0 UNION "
                   "SELECT target_id AS note_id FROM top WHERE period = 0")
    new = "" if not cold_start else (
        " AND NOT EXISTS (SELECT 1 FROM train_notes n WHERE n.note_id = p.query_id)"
        " AND NOT EXISTS (SELECT 1 FROM train_notes n WHERE n.note_id = p.target_id)")
    return [
        ("train_notes", train_notes),
        ("split_pairs", f"SELECT p.* FROM top p WHERE p.period = 0 OR (p.period > 0{new})"),
        ("train_val_notes", ("SELECT query_id AS note_id FROM split_pairs WHERE period < 2 UNION "
                            "SELECT target_id AS note_id FROM split_pairs WHERE period < 2")),
    ]


def pool_sql(cold_start: bool) -> str:
    """Ids of the test pool: notes seen in the test period (cold-start: minus every note of a train pair)."""
    new = " AND NOT EXISTS (SELECT 1 FROM train_notes n WHERE n.note_id = e.note_id)" if cold_start else ""
    return f"SELECT DISTINCT e.note_id FROM events e WHERE e.period = 2{new}"


def count_sql(table: str, what: str = "*") -> str:
    """``SELECT COUNT(what) FROM table``."""
    return f"SELECT COUNT({what}) FROM {table}"
