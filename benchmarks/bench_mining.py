"""Benchmark of ``mine-pairs`` (docs/data.md#mining-pairs-from-behaviour-logs): DuckDB on a large synthetic
behaviour log (wall time, peak RSS under a memory limit) and DuckDB against a straightforward pandas implementation
on a log pandas can hold (same pairs, wall-time ratio). Two DuckDB figures face pandas: the whole ``mine-pairs``
pipeline (validation with counts, splits, at-most-once, files) and the same work as the pandas code (read, known
notes, users with two events or more, the mining query).

Each measured run is a child process, so its peak RSS is its own. Appends one JSON line to
benchmarks/results/mining.jsonl.

    python benchmarks/bench_mining.py --events 50000000 --pandas-events 2000000 --threads 2 --memory-limit 4GB
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "mining.jsonl"


def make_catalogue(root: Path, clusters: int, per_cluster: int, test_fraction: float = 0.25) -> None:
    """A text-only catalogue (``notes.csv``) and its planted clusters (``notes_meta.csv``); no images needed."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "notes.csv", "w", newline="") as f, open(root / "notes_meta.csv", "w", newline="") as g:
        notes, meta = csv.writer(f), csv.writer(g)
        notes.writerow(["note_id", "title", "topics", "content", "image"])
        meta.writerow(["note_id", "split", "cluster_id"])
        for c in range(clusters):
            split = "test" if c >= clusters * (1 - test_fraction) else "train"
            for k in range(per_cluster):
                nid = f"n{c * per_cluster + k}"
                notes.writerow([nid, f"item {c} post {k}", f"c{c}", "x" * (10 + 37 * k % 120), ""])
                meta.writerow([nid, split, c])


def pandas_mine(log: Path, catalogue: Path, cuts: dict[str, float], window: float, upper: float, lower: float,
                top_t: int) -> int:
    """The straightforward pandas version a user would write (same definitions, same periods); returns #pairs."""
    import pandas as pd

    ids = set(pd.read_csv(catalogue / "notes.csv", usecols=["note_id"])["note_id"])
    ev = pd.read_parquet(log)
    ev["note_id"] = ev["note_id"].astype(str)
    ev = ev[ev["note_id"].isin(ids)]
    ev = ev[ev.groupby("user_id")["note_id"].transform("size") >= 2]
    ev["period"] = (ev["timestamp"] >= cuts["val_start"]).astype(int) + (ev["timestamp"] >= cuts["test_start"])
    ev["is_click"] = ev["action"].astype(str) == "click"
    n = ev[ev["is_click"]].groupby(["period", "user_id"])["note_id"].nunique().rename("n_clicked").reset_index()
    m = ev.merge(ev, on=["period", "user_id"], suffixes=("_a", "_b"))
    m = m[(m["timestamp_b"] > m["timestamp_a"]) & (m["timestamp_b"] <= m["timestamp_a"] + window)
          & (m["note_id_a"] != m["note_id_b"]) & m["is_click_b"]]
    m = m[["period", "user_id", "note_id_a", "note_id_b"]].drop_duplicates().merge(n, on=["period", "user_id"])
    m["w"] = 1.0 / m["n_clicked"]
    s = m.groupby(["period", "note_id_a", "note_id_b"])["w"].sum().round(12).rename("score").reset_index()
    s = s[(s["score"] <= upper) & (s["score"] >= lower)]
    s = s.sort_values(["period", "note_id_a", "score", "note_id_b"], ascending=[True, True, False, True])
    return len(s.groupby(["period", "note_id_a"]).head(top_t))


def duckdb_query(args: argparse.Namespace, cfg: object, cuts: dict[str, float]) -> int:
    """The same work as :func:`pandas_mine` on DuckDB: read, keep known notes and users with >= 2 events, mine."""
    from notellm2_pl.data.mining import open_engine
    from notellm2_pl.data.mining.query import cooccurrence_stages

    engine = open_engine("duckdb", args.memory_limit, str(args.work / "spill"), args.threads)
    engine.create("ids", f"SELECT note_id FROM read_csv('{args.work / 'catalogue' / 'notes.csv'}', header = true)")
    engine.create("ev", "SELECT CAST(user_id AS VARCHAR) AS user_id, CAST(note_id AS VARCHAR) AS note_id, "
                        "CAST(timestamp AS DOUBLE) AS ts, CAST(action AS VARCHAR) = 'click' AS is_click "
                        f"FROM read_parquet('{args.log}') WHERE CAST(note_id AS VARCHAR) IN (SELECT note_id FROM ids)")
    engine.create("events", "SELECT user_id, note_id, ts, TRUE AS is_view, is_click, "
                            f"CASE WHEN ts >= {cuts['test_start']!r} THEN 2 WHEN ts >= {cuts['val_start']!r} THEN 1 "
                            "ELSE 0 END AS period FROM ev WHERE user_id IN "
                            "(SELECT user_id FROM ev GROUP BY user_id HAVING COUNT(*) >= 2)")
    for name, sql in cooccurrence_stages(cfg):
        engine.create(name, sql)
    return int(engine.scalar("SELECT COUNT(*) FROM top"))


def child(args: argparse.Namespace) -> None:
    """One measured run in this process; prints a JSON line (wall time, peak RSS)."""
    from notellm2_pl.data.mining import MiningConfig, mine_pairs, open_engine

    cfg = MiningConfig(window_s=args.window, split="time")
    start = time.perf_counter()
    if args.child == "duckdb":
        engine = open_engine("duckdb", args.memory_limit, str(args.work / "spill"), args.threads)
        report = mine_pairs(args.log, args.work / "catalogue", args.work / f"out_{args.log.stem}", cfg, engine,
                            overwrite=True)
        top = int(engine.scalar("SELECT COUNT(*) FROM top"))
        extra = {"cuts": report.cuts, "outputs": report.outputs, "stages": [s.line() for s in report.stages]}
    elif args.child == "duckdb-query":
        top = duckdb_query(args, cfg, json.loads(args.cuts))
        extra = {}
    else:
        cuts = json.loads(args.cuts)
        top = pandas_mine(args.log, args.work / "catalogue", cuts, cfg.window_s, cfg.upper, cfg.lower, cfg.top_t)
        extra = {}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"wall_s": round(time.perf_counter() - start, 2), "peak_rss_gib": round(rss, 3),
                      "top_pairs": top, **extra}))


def run_child(kind: str, log: Path, args: argparse.Namespace, cuts: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--log", str(log), "--work", str(args.work),
           "--window", str(args.window), "--memory-limit", args.memory_limit, "--threads", str(args.threads)]
    if cuts:
        cmd += ["--cuts", json.dumps(cuts)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Generate the logs, run DuckDB (big), DuckDB and pandas (small), append the figures to mining.jsonl."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=50_000_000, help="events of the big log (DuckDB only)")
    p.add_argument("--pandas-events", type=int, default=2_000_000, help="events of the side-by-side log")
    p.add_argument("--clusters", type=int, default=50_000)
    p.add_argument("--window", type=float, default=3600.0, help="mining window in seconds (default: one hour)")
    p.add_argument("--memory-limit", default="4GB")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_mining"))
    p.add_argument("--child", choices=("duckdb", "duckdb-query", "pandas"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--log", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--cuts", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    from notellm2_pl.data.mining.synthetic_logs import LogConfig, generate_logs

    make_catalogue(args.work / "catalogue", args.clusters, 10)
    logs, gen = {}, {}
    for name, events in (("small", args.pandas_events), ("big", args.events)):
        logs[name] = args.work / f"log_{name}.parquet"
        users = max(1, events // 10)  # 2 sessions x 5 events per user on average
        t0 = time.perf_counter()
        gen[name] = generate_logs(args.work / "catalogue", logs[name],
                                  LogConfig(num_users=users, sessions_per_user=2, events_per_session=5))
        gen[name]["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"generated {name}: {gen[name]}", flush=True)
    small_duck = run_child("duckdb", logs["small"], args)
    print(f"duckdb small: {small_duck['wall_s']} s", flush=True)
    small_query = run_child("duckdb-query", logs["small"], args, small_duck["cuts"])
    print(f"duckdb query small: {small_query['wall_s']} s", flush=True)
    small_pandas = run_child("pandas", logs["small"], args, small_duck["cuts"])
    print(f"pandas small: {small_pandas['wall_s']} s", flush=True)
    big = run_child("duckdb", logs["big"], args)
    print(f"duckdb big: {big['wall_s']} s, {big['peak_rss_gib']} GiB", flush=True)
    record = {"bench": "mining", "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": os.cpu_count(),
              "threads": args.threads, "memory_limit": args.memory_limit, "window_s": args.window,
              "big": {"events": gen["big"]["events"], "generate_s": gen["big"]["seconds"], **big},
              "side_by_side": {"events": gen["small"]["events"], "duckdb_s": small_duck["wall_s"],
                               "pandas_s": small_pandas["wall_s"], "duckdb_rss_gib": small_duck["peak_rss_gib"],
                               "pandas_rss_gib": small_pandas["peak_rss_gib"],
                               "duckdb_query_s": small_query["wall_s"],
                               "same_pair_count": small_duck["top_pairs"] == small_pandas["top_pairs"]
                               == small_query["top_pairs"],
                               "ratio_query": round(small_pandas["wall_s"] / small_query["wall_s"], 2),
                               "ratio_pipeline": round(small_pandas["wall_s"] / small_duck["wall_s"], 2)}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
