"""The whole neighbour table of a catalogue (``build_table``, what ``neighbours`` runs): wall time and peak RSS, exact
and approximate, with the approximate methods' recall@k against exact.

The catalogue is ``--notes`` random unit vectors around ``--clusters`` centres (d = ``--dim``), so that neighbours
mean something and an approximate index faces the structure a trained model gives (uniform random vectors would make
every IVF list equally far). Each method runs in its own child process (``--single``), so its peak RSS is its own
(``os.wait4``). A JSON line per method goes to ``--out``. Run by hand on idle cores::

    /work/venv/bin/python benchmarks/bench_neighbour_table.py                          # 1M notes, exact + ivf + hnsw
    /work/venv/bin/python benchmarks/bench_neighbour_table.py --notes 100000 --methods ivf hnsw
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def catalogue_arrays(notes: int, clusters: int, dim: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``(ids, emb)``: unit vectors, each a random centre plus noise of the same norm scale."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    emb = centres[rng.integers(0, clusters, notes)] + 0.8 * rng.standard_normal((notes, dim), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)  # (N, d)
    return [f"n{i:08d}" for i in range(notes)], np.ascontiguousarray(emb)


def run_single(args: argparse.Namespace) -> dict:
    """Build one table in this process; returns its figures."""
    from notellm2_pl.retrieval.catalogue import Catalogue
    from notellm2_pl.retrieval.neighbour_table import TableSettings, build_table

    ids, emb = catalogue_arrays(args.notes, args.clusters, args.dim, args.seed)
    index = {"ivf": {"nprobe": args.nprobe}, "hnsw": {"ef_search": args.ef_search}}.get(args.single, {})
    settings = TableSettings(k=args.k, method=args.single, index=index)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        meta = build_table(Catalogue(ids, emb), Path(tmp) / "table", settings,
                           recall_sample=args.recall_sample if args.single != "exact" else 0)
        seconds = time.perf_counter() - start
    return {"method": args.single, "seconds": round(seconds, 1), "approx_recall": meta.get("approx_recall"),
            "index": index}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--notes", type=int, default=1_000_000)
    p.add_argument("--clusters", type=int, default=20_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--methods", nargs="+", default=["exact", "ivf", "hnsw"])
    p.add_argument("--nprobe", type=int, default=16, help="IVF lists visited per query")
    p.add_argument("--ef_search", type=int, default=64, help="HNSW search candidates")
    p.add_argument("--recall_sample", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--single", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cpu_neighbour_table.jsonl")
    args = p.parse_args()
    if args.single:
        print(json.dumps(run_single(args)))
        return
    from notellm2_pl.analysis.evidence import provenance

    code = provenance(" ".join(["python", *sys.argv]), Path(__file__).resolve().parent.parent)
    for method in args.methods:
        argv = [f"--{k}={getattr(args, k)}" for k in ("notes", "clusters", "dim", "k", "nprobe", "ef_search",
                                                        "recall_sample", "seed")]
        child = subprocess.Popen([sys.executable, __file__, *argv, "--single", method], stdout=subprocess.PIPE)
        out = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        if status != 0:
            raise SystemExit(f"{method} failed (status {status})")
        row = json.loads(out.decode().strip().splitlines()[-1])
        row.update(notes=args.notes, clusters=args.clusters, dim=args.dim, k=args.k,
                   peak_rss_gb=round(usage.ru_maxrss / 2**20, 2), cpus=os.cpu_count(),
                   load_avg=round(os.getloadavg()[0], 2), platform=platform.platform(),
                   date=time.strftime("%Y-%m-%d %H:%M"), commit=code["commit"][:10], dirty=code["dirty"],
                   command=code["command"])
        print(json.dumps(row), flush=True)
        with args.out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
