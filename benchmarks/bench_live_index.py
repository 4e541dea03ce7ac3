"""Live-index engine choice for ``serve``: LanceDB vs Milvus Lite, both embedded (on disk, no server to start).

For N unit vectors (default 100,000, d=64): build time, p50/p99 latency of a one-note upsert, a filtered top-10
(``category != 'c3'``) and a one-note delete; whether a write is visible to another handle on the next read; whether
20 acknowledged upserts survive SIGKILL of the writing process (a child writes and prints "ack" after each upsert
returns, then is killed; the parent reopens the table and counts them); and whether a second process can open the
same database while the first holds it (``serve`` reads and writes from several worker processes).
Results: benchmarks/results/live_index_engines.jsonl and docs/serving.md#live-index-engine.

    /work/venv/bin/python benchmarks/bench_live_index.py lance   # then: milvus
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

D, K, REPS = 64, 10, 30
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "live_index_engines.jsonl"
rng = np.random.default_rng(0)


def vecs(n: int) -> np.ndarray:
    v = rng.standard_normal((n, D)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class Lance:
    def __init__(self, root: str) -> None:
        import lancedb

        self.db = lancedb.connect(f"{root}/lance", read_consistency_interval=timedelta(0))

    def build(self, n: int) -> None:
        import pyarrow as pa

        v = vecs(n)
        self.t = self.db.create_table("notes", pa.table({
            "id": [f"n{i}" for i in range(n)], "vector": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), D),
            "category": [f"c{i % 10}" for i in range(n)]}), mode="overwrite")

    def open(self) -> None:
        self.t = self.db.open_table("notes")

    def upsert(self, i: int) -> None:
        row = [{"id": f"u{i}", "vector": vecs(1)[0].tolist(), "category": "c1"}]
        self.t.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(row)

    def delete(self, i: int) -> None:
        self.t.delete(f"id = 'u{i}'")

    def search(self, q: np.ndarray) -> list:
        return self.t.search(q).distance_type("dot").where("category != 'c3'").limit(K).to_list()

    def count(self, where: str) -> int:
        return len(self.t.search().where(where).limit(1000).to_list())

    def close(self) -> None:
        pass


class Milvus:
    def __init__(self, root: str) -> None:
        from pymilvus import MilvusClient

        self.c = MilvusClient(f"{root}/milvus.db")

    def build(self, n: int) -> None:
        from pymilvus import DataType

        if self.c.has_collection("notes"):
            self.c.drop_collection("notes")
        s = self.c.create_schema(auto_id=False)
        s.add_field("id", DataType.VARCHAR, is_primary=True, max_length=128)
        s.add_field("vector", DataType.FLOAT_VECTOR, dim=D)
        s.add_field("category", DataType.VARCHAR, max_length=128)
        ip = self.c.prepare_index_params()
        ip.add_index("vector", index_type="FLAT", metric_type="IP")
        self.c.create_collection("notes", schema=s, index_params=ip)
        v = vecs(n)
        for a in range(0, n, 10_000):
            self.c.insert("notes", [{"id": f"n{i}", "vector": v[i].tolist(), "category": f"c{i % 10}"}
                                    for i in range(a, min(n, a + 10_000))])
        self.c.load_collection("notes")

    def open(self) -> None:
        self.c.load_collection("notes")

    def upsert(self, i: int) -> None:
        self.c.upsert("notes", [{"id": f"u{i}", "vector": vecs(1)[0].tolist(), "category": "c1"}])

    def delete(self, i: int) -> None:
        self.c.delete("notes", ids=[f"u{i}"])

    def search(self, q: np.ndarray) -> list:
        return self.c.search("notes", [q.tolist()], limit=K, filter="category != 'c3'", output_fields=["id"])

    def count(self, where: str) -> int:
        return len(self.c.query("notes", filter=where.replace(" AND ", " and ").replace("=", "==")
                                .replace(">==", ">=").replace("<==", "<="), output_fields=["id"]))

    def close(self) -> None:
        self.c.close()


ENGINES = {"lance": Lance, "milvus": Milvus}


def timed(fn: object) -> dict[str, float]:
    ts = []
    for i in range(REPS):
        t = time.perf_counter()
        fn(i)
        ts.append((time.perf_counter() - t) * 1e3)
    return {"p50_ms": round(float(np.percentile(ts, 50)), 2), "p99_ms": round(float(np.percentile(ts, 99)), 2)}


def second_process_opens(engine: str, root: str) -> bool:
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_live_index as b; " \
           f"e = b.ENGINES[{engine!r}]({root!r}); e.open(); print('ok')"
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    return r.returncode == 0 and "ok" in r.stdout


def survives_kill(engine: str, root: str) -> dict[str, int]:
    p = subprocess.Popen([sys.executable, __file__, engine, "--root", root, "--phase", "writer"],
                         stdout=subprocess.PIPE, text=True)
    acks = 0
    for line in p.stdout:
        acks += line.startswith("ack")
        if acks == 20:
            break
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    e = ENGINES[engine](root)
    e.open()
    return {"acked": acks, "survived": e.count("id >= 'u5000' AND id < 'u5020'")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("engine", choices=sorted(ENGINES))
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--root", default="/tmp/live-index-engines")
    p.add_argument("--phase", choices=("all", "timings", "writer"), default="all", help=argparse.SUPPRESS)
    args = p.parse_args()
    Path(args.root).mkdir(parents=True, exist_ok=True)
    if args.phase == "writer":  # the writer the parent kills
        writer(args.engine, args.root)
    elif args.phase == "timings":
        print(json.dumps(timings(args.engine, args.root, args.rows)))
    else:  # timings in a child process: Milvus Lite admits one process, and the kill test needs a fresh writer
        out = subprocess.run([sys.executable, __file__, args.engine, "--root", args.root, "--rows", str(args.rows),
                              "--phase", "timings"], check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1]) | {"kill9": survives_kill(args.engine, args.root)}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row))


def writer(engine: str, root: str) -> None:
    e = ENGINES[engine](root)
    e.open()
    for i in range(5000, 5020):
        e.upsert(i)
        print(f"ack {i}", flush=True)
    time.sleep(600)


def timings(engine: str, root: str, rows: int) -> dict:
    e = ENGINES[engine](root)
    start = time.perf_counter()
    e.build(rows)
    query = vecs(1)[0]
    row = {"engine": engine, "rows": rows, "d": D, "build_s": round(time.perf_counter() - start, 2),
           "upsert": timed(e.upsert), "search_top10_filtered": timed(lambda i: e.search(query)),
           "delete": timed(e.delete)}
    e.upsert(999)
    other = ENGINES[engine](root) if engine == "lance" else e
    other.open()
    row["visible_next_read"] = other.count("id = 'u999'") == 1
    row["second_process_opens"] = second_process_opens(engine, root)
    e.close()
    return row


if __name__ == "__main__":
    main()
