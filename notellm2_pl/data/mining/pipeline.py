"""Behaviour logs -> related-note pairs: validate the log, mine, split without leakage, write a dataset.

:func:`mine_pairs` runs the stages of :mod:`notellm2_pl.data.mining.query` on an engine of
:mod:`notellm2_pl.data.mining.engines` and records, for every stage, what it kept and dropped
(:class:`~notellm2_pl.data.mining.settings.MiningReport`); a stage that leaves nothing raises
:class:`~notellm2_pl.data.mining.settings.MiningError` naming it. Definitions:
docs/data.md#mining-pairs-from-behaviour-logs.
"""

from __future__ import annotations

from pathlib import Path

from notellm2_pl.data.mining import query as Q
from notellm2_pl.data.mining.engines import Engine
from notellm2_pl.data.mining.settings import MiningConfig, MiningError, MiningReport, Stage
from notellm2_pl.data.mining.writing import MinedPairs, write_dataset
from notellm2_pl.data.schema import TABLE_EXTENSIONS
from notellm2_pl.retrieval.pairs import Pair, accept_pairs


def catalogue_tables(path: str | Path) -> list[Path]:
    """The notes tables of a catalogue: a table file, or a dataset folder's ``notes.*``/``notes_{train,test}.*``.

    Args:
        path: A canonical notes table (``.csv``/``.jsonl``/``.parquet``) or a folder in the canonical layout.

    Returns:
        The tables, in the order ids are looked up (the first occurrence of an id wins).

    Raises:
        MiningError: No notes table there.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    found = [path / f"{stem}{ext}" for stem in ("notes", "notes_train", "notes_test") for ext in TABLE_EXTENSIONS
             if (path / f"{stem}{ext}").exists()]
    if not found:
        raise MiningError(f"no catalogue at {path}: pass a notes table or a folder holding notes.csv or "
                          "notes_train.csv/notes_test.csv (canonical layout, docs/data.md)")
    return found


def _count(engine: Engine, table: str, where: str = "") -> int:
    return int(engine.scalar(Q.count_sql(table) + (f" WHERE {where}" if where else "")) or 0)


def validate_log(engine: Engine, cfg: MiningConfig, report: MiningReport) -> None:
    """Run the validation stages, recording rows kept and dropped (and why) at each.

    Args:
        engine: Engine with ``raw_events`` and ``catalogue_ids`` registered.
        cfg: Mining settings.
        report: Where the stages go.
    """
    stages = dict(Q.event_stages(cfg, engine.dialect))
    read = report.add(Stage("read", "events", _count(engine, "raw_events")))
    engine.create("parsed", stages["parsed"])
    engine.create("valid", stages["valid"])
    valid = _count(engine, "valid")
    no_id = _count(engine, "parsed", "user_id IS NULL OR note_id IS NULL")
    report.add(Stage("parse", "events", valid, {"missing user or note id": no_id,
                                                "unparsable timestamps": read.kept - valid - no_id},
                     {"out-of-order timestamps (sorted by time)": int(engine.scalar(Q.out_of_order_sql()) or 0)}))
    engine.create("known", stages["known"])
    known = _count(engine, "known")
    unknown = ("SELECT DISTINCT note_id FROM valid v WHERE NOT EXISTS "
               "(SELECT 1 FROM catalogue_ids c WHERE c.note_id = v.note_id)")
    unknown_ids = _count(engine, f"({unknown}) x")
    examples = [r[0] for r in engine.rows(f"SELECT note_id FROM ({unknown}) x ORDER BY note_id LIMIT 5")]
    report.add(Stage("catalogue", "events", known, {"events of unknown note ids": valid - known},
                     {"distinct unknown note ids": unknown_ids},
                     f"e.g. {', '.join(examples)}" if examples else ""))
    engine.create("typed", stages["typed"])
    typed = _count(engine, "typed")
    report.add(Stage("actions", "events", typed, {"events of other actions": known - typed}))
    engine.create("multi", stages["multi"])
    multi = _count(engine, "multi")
    users = _count(engine, "(SELECT DISTINCT user_id FROM typed) x")
    kept_users = _count(engine, "(SELECT DISTINCT user_id FROM multi) x")
    report.add(Stage("users", "events", multi, {"events of users with one event": typed - multi},
                     {"users kept": kept_users, "users with one event": users - kept_users}))


def assign_periods(engine: Engine, cfg: MiningConfig, report: MiningReport) -> None:
    """Cut the log's time span into train / val / test periods and record the events of each.

    The cuts are ``cfg.val_start``/``cfg.test_start`` when given, else the last ``test_fraction`` of the span is
    test and the ``val_fraction`` before it val.
    """
    lo = float(engine.scalar("SELECT MIN(ts) FROM multi"))
    hi = float(engine.scalar("SELECT MAX(ts) FROM multi"))
    span = hi - lo
    test_start = cfg.test_start if cfg.test_start is not None else lo + (1 - cfg.test_fraction) * span
    val_start = cfg.val_start if cfg.val_start is not None else test_start - cfg.val_fraction * span
    if val_start > test_start:
        raise MiningError(f"val period starts ({val_start}) after the test period ({test_start})")
    report.cuts.update({"first_event": lo, "val_start": val_start, "test_start": test_start, "last_event": hi})
    for name, sql in Q.periods_stage(val_start, test_start):
        engine.create(name, sql)
    counts = dict(engine.rows("SELECT period, COUNT(*) FROM events GROUP BY period"))
    for split, code in Q.PERIODS.items():
        if split != "val" or _has_val(cfg):
            report.add(Stage(f"{split} period", "events", int(counts.get(code, 0))))


def _has_val(cfg: MiningConfig) -> bool:
    return cfg.val_fraction > 0 or cfg.val_start is not None


def mine(engine: Engine, cfg: MiningConfig, report: MiningReport) -> None:
    """Run the co-occurrence stages; record co-occurrences, scored pairs, the bounds and top-t."""
    for name, sql in Q.cooccurrence_stages(cfg):
        engine.create(name, sql)
    report.add(Stage("co-occurrence", "(user, pair) events", _count(engine, "cooc")))
    scored = report.add(Stage("scored", "pairs", _count(engine, "scored")))
    supported = report.add(Stage("min support", "pairs", _count(engine, "supported"),
                                 {f"pairs with < {cfg.min_support} users": scored.kept - _count(engine, "supported")}))
    under = _count(engine, "under_upper")
    report.add(Stage("upper bound", "pairs", under, {f"pairs with score > u={cfg.upper}": supported.kept - under}))
    bounded = _count(engine, "bounded")
    report.add(Stage("lower bound", "pairs", bounded, {f"pairs with score < l={cfg.lower}": under - bounded}))
    top = _count(engine, "top")
    report.add(Stage("top-t", "pairs", top, {f"pairs beyond each note's top t={cfg.top_t}": bounded - top}))


def split_pairs(engine: Engine, cfg: MiningConfig, report: MiningReport) -> MinedPairs:
    """Split the mined pairs by period (cold-start: drop val/test pairs of train notes), then apply the
    at-most-once rule of docs/method.md#recall-at-k to val and test, best scores first.

    Returns:
        Accepted val and test pairs and the test pool's ids (train pairs stay in the engine, streamed when written).
    """
    cold = cfg.split == "cold-start"
    for name, sql in Q.split_stages(cold):
        engine.create(name, sql)
    mined = dict(engine.rows("SELECT period, COUNT(*) FROM top GROUP BY period"))
    kept = dict(engine.rows("SELECT period, COUNT(*) FROM split_pairs GROUP BY period"))
    engine.create("pool", Q.pool_sql(cold))
    pool = {r[0] for r in engine.rows("SELECT note_id FROM pool")}
    out = MinedPairs(pool=pool)
    for split, code in Q.PERIODS.items():
        if split == "val" and not _has_val(cfg):
            continue
        n_kept = int(kept.get(code, 0))
        dropped = {"pairs touching a note of a train pair": int(mined.get(code, 0)) - n_kept} if cold and code else {}
        report.add(Stage(f"{split} pairs" + (" (cold-start)" if cold and code else ""), "pairs", n_kept, dropped))
        if code == 0:
            out.train_count = n_kept
            continue
        ranked: list[Pair] = [(q, t) for q, t in engine.rows(
            f"SELECT query_id, target_id FROM split_pairs WHERE period = {code} "
            "ORDER BY score DESC, query_id ASC, target_id ASC")]
        known = pool if code == 2 else {n for p in ranked for n in p}
        accepted = accept_pairs(ranked, known)
        report.add(Stage(f"{split} at-most-once", "pairs", len(accepted),
                         {"pairs reusing a note already in an accepted pair": len(ranked) - len(accepted)}))
        setattr(out, split, accepted)
    return out


def mine_pairs(logs: str | Path, catalogue: str | Path, out: str | Path, cfg: MiningConfig, engine: Engine,
               overwrite: bool = False, short_max_chars: int | None = None,
               long_min_chars: int | None = None) -> MiningReport:
    """Logs -> validated events -> co-occurrence pairs -> splits -> a dataset folder ready for ``fit``.

    Args:
        logs: Behaviour log: a ``.csv``/``.parquet``/``.jsonl`` file or a folder of them, columns
            ``user_id, note_id, timestamp[, action]`` (timestamp: epoch seconds or an ISO date-time, UTC).
        catalogue: The notes: a canonical notes table or a canonical dataset folder (:func:`catalogue_tables`).
        out: Output folder (canonical layout: ``notes_{train,test}.csv``, ``pairs_{train,val,test}.csv``, the four
            ``pairs_test_*`` subsets, ``mining.json``); written atomically.
        cfg: Mining settings.
        engine: The engine to run on (:func:`~notellm2_pl.data.mining.engines.open_engine`).
        overwrite: Replace an existing ``out``.
        short_max_chars: Short-text threshold of the subsets (default: the evaluator's).
        long_min_chars: Long-text threshold of the subsets (default: the evaluator's).

    Returns:
        The report: every stage's kept and dropped counts, the period cuts and the files' row counts.

    Raises:
        MiningError: A stage removed everything (named), a bad input file or setting.
        FileExistsError: ``out`` exists and ``overwrite`` is false.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite or choose another --out")
    report = MiningReport()
    tables = catalogue_tables(catalogue)
    engine.load_catalogue(tables)
    report.add(Stage("catalogue notes", "notes", _count(engine, "catalogue")))
    engine.load_log(Path(logs))
    validate_log(engine, cfg, report)
    assign_periods(engine, cfg, report)
    mine(engine, cfg, report)
    pairs = split_pairs(engine, cfg, report)
    write_dataset(engine, out, pairs, cfg, report, tables, overwrite, short_max_chars, long_min_chars)
    return report
