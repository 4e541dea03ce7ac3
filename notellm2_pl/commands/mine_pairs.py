"""``python -m notellm2_pl mine-pairs``: related-note pairs from behaviour logs (:mod:`notellm2_pl.data.mining`).

Also ``--synthetic-log``: write a behaviour log over a synthetic dataset (``synth``) instead of mining, and
``--score-against``: score the mined pairs against a synthetic dataset's planted relations.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from notellm2_pl.data.mining import MiningConfig, MiningError, mine_pairs, open_engine
from notellm2_pl.data.mining.settings import WEEK_SECONDS
from notellm2_pl.data.mining.synthetic_logs import LogConfig, generate_logs, read_planted, score_pairs


def _actions(text: str) -> tuple[str, ...]:
    return tuple(a.strip() for a in text.split(",") if a.strip())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mine-pairs``: inputs, engine, and one flag per mining parameter (paper defaults)."""
    d = MiningConfig()
    p = argparse.ArgumentParser(
        prog="notellm2 mine-pairs",
        description="Mine related-note pairs from behaviour logs with NoteLLM's co-occurrence score and write a "
                    "dataset folder ready for `fit --data.root OUT`. See docs/data.md, 'Mining pairs from "
                    "behaviour logs'.")
    p.add_argument("--logs", required=True, help="log file or folder (.csv/.parquet/.jsonl): user_id, note_id, "
                                                 "timestamp (epoch seconds or ISO date-time, UTC)[, action]")
    p.add_argument("--catalogue", required=True, help="notes table, or a dataset folder in the canonical layout")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb", help="default: duckdb (in process)")
    g.add_argument("--memory-limit", default="2GB", help="DuckDB memory limit; it spills beyond it (default 2GB)")
    g.add_argument("--temp-dir", default=None, help="DuckDB spill folder (default: DuckDB's)")
    g.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    g.add_argument("--spark-master", default="local[2]", help="Spark master URL (default local[2]; a cluster: "
                                                              "spark://host:7077, yarn, k8s://...)")
    g.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE", help="extra Spark setting")
    m = p.add_argument_group("mining (defaults: NoteLLM, WWW'24)")
    m.add_argument("--window", type=float, default=d.window_s,
                   help=f"seconds from viewing A to clicking B (default {WEEK_SECONDS:.0f}: one week)")
    m.add_argument("--view-actions", type=_actions, default=d.view_actions, help="actions that view A "
                   f"(default {','.join(d.view_actions)}; logs without an action column: every event)")
    m.add_argument("--click-actions", type=_actions, default=d.click_actions,
                   help=f"actions that click B (default {','.join(d.click_actions)})")
    m.add_argument("--upper", type=float, default=d.upper, help=f"upper bound u of a score (default {d.upper})")
    m.add_argument("--lower", type=float, default=d.lower, help=f"lower bound l of a score (default {d.lower})")
    m.add_argument("--top-t", type=int, default=d.top_t, help=f"targets kept per note (default {d.top_t})")
    m.add_argument("--min-support", type=int, default=d.min_support, help="fewest users behind a pair (default 1)")
    m.add_argument("--symmetric", action="store_true", help="count A->B and B->A (default: directed, as the paper)")
    s = p.add_argument_group("splits")
    s.add_argument("--split", choices=("cold-start", "time"), default=d.split, help="default cold-start")
    s.add_argument("--val-fraction", type=float, default=d.val_fraction, help="share of the time span (default 0.1)")
    s.add_argument("--test-fraction", type=float, default=d.test_fraction, help="share at the end (default 0.2)")
    s.add_argument("--val-start", type=float, default=None, help="explicit val period start (epoch seconds)")
    s.add_argument("--test-start", type=float, default=None, help="explicit test period start (epoch seconds)")
    x = p.add_argument_group("synthetic benchmark")
    x.add_argument("--synthetic-log", action="store_true", help="write a synthetic behaviour log to --logs for the "
                   "synthetic dataset --catalogue (from `synth`), then mine it")
    x.add_argument("--log-users", type=int, default=LogConfig.num_users, help="users of the synthetic log")
    x.add_argument("--score-against", default=None, metavar="SYNTH_DIR",
                   help="print precision/recall of the mined pairs against this synthetic dataset's clusters")
    return p


def config_from_args(args: argparse.Namespace) -> MiningConfig:
    """The mining settings of parsed arguments."""
    return MiningConfig(window_s=args.window, view_actions=args.view_actions, click_actions=args.click_actions,
                        upper=args.upper, lower=args.lower, top_t=args.top_t, min_support=args.min_support,
                        symmetric=args.symmetric, split=args.split, val_fraction=args.val_fraction,
                        test_fraction=args.test_fraction, val_start=args.val_start, test_start=args.test_start)


def _print_scores(out: Path, synth: str) -> dict[str, dict[str, float]]:
    planted = read_planted(synth)
    scores = {}
    for split in ("train", "val", "test"):
        with open(out / f"pairs_{split}.csv", newline="", encoding="utf-8") as f:
            pairs = [(r[0], r[1]) for r in list(csv.reader(f))[1:]]
        scores[split] = score_pairs(pairs, planted)
        print(f"{split:<5} pairs vs planted clusters: precision {scores[split]['precision']:.3f}, "
              f"recall {scores[split]['recall']:.3f} ({len(pairs)} pairs)")
    return scores


def main(argv: list[str] | None = None) -> int:
    """``notellm2 mine-pairs --logs LOG --catalogue NOTES --out DIR [options]``.

    Returns:
        0 on success, 2 on bad input, a bad setting or an empty result (the stage is named).
    """
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        if args.synthetic_log:
            stats = generate_logs(args.catalogue, args.logs, LogConfig(num_users=args.log_users))
            print(f"wrote a synthetic log to {args.logs}: {json.dumps(stats)}")
        conf = dict(kv.split("=", 1) for kv in args.spark_conf)
        engine = open_engine(args.engine, args.memory_limit, args.temp_dir, args.threads, args.spark_master, conf)
        start = time.perf_counter()
        try:
            report = mine_pairs(args.logs, args.catalogue, args.out, cfg, engine, overwrite=args.overwrite)
        finally:
            engine.close()
    except MiningError as err:
        for line in err.report.lines() if err.report else []:
            print(line)
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s: {json.dumps(report.outputs)}")
    if args.score_against:
        _print_scores(Path(args.out), args.score_against)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
