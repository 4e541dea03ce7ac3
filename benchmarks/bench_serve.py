"""Load test of ``serve`` on loopback: /neighbours by id over a large live index, and /embed vs offline embedding.

Bounded concurrent clients (threads, one keep-alive HTTP connection each) for a bounded time per phase:

1. ``/neighbours`` by id, ``--k`` neighbours of random indexed notes, over a live index of ``--rows`` random unit
   vectors (d = the model's) plus the dataset's notes (IVF-flat above 200k rows, ``--nprobes``; its recall@k
   against exact search on the random rows is measured in process first);
2. ``/embed`` of one note per request (the dataset's notes, images as paths), batched by LitServe
   (``--max-batch-size``, ``--batch-timeout``), against offline ``Embedder.embed`` of the same notes at the same batch
   size, in this process before the server starts. Target: served / offline notes/s >= 0.7.

Throughput, p50/p99 latency, errors (any non-200) and the RSS of the server's process group at start and end go to
``benchmarks/results/serve.jsonl``. Without ``--model``, a tiny mICL export (d=64) is built in the work folder.

    /work/venv/bin/python benchmarks/bench_serve.py --rows 1000000 --seconds 20 --clients 8
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serve.jsonl"


def tiny_export(work: Path) -> tuple[Path, Path]:
    """(export dir, dataset root) of a tiny mICL model with 64-d embeddings."""
    from notellm2_pl.inference.export import export_model
    from notellm2_pl.inference.factory import build_from_config
    from notellm2_pl.plugins.testing import write_tiny_recipe

    cfg, data = write_tiny_recipe(work)
    cfg.write_text(cfg.read_text().replace("embed_dim: 16", "embed_dim: 64"))
    module, model_cfg, data_cfg = build_from_config(cfg)
    return export_model(module, model_cfg, data_cfg, work / "export"), data


def build_index(uri: Path, notes_ids: list[str], notes_emb: np.ndarray, rows: int, nprobes: int, k: int) -> dict:
    """The live index (random rows + the notes), its build time, and IVF recall@k vs exact on random queries."""
    from notellm2_pl.retrieval.live_index import LiveIndex

    rng = np.random.default_rng(0)
    dim = notes_emb.shape[1]
    start = time.perf_counter()
    index = LiveIndex.create(uri, dim)
    index.add(notes_ids, notes_emb)
    block = 100_000
    sample = []  # a few random rows, kept for the recall check
    for a in range(0, rows, block):
        v = rng.standard_normal((min(block, rows - a), dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        index.add([f"r{i:07d}" for i in range(a, a + len(v))], v)
        sample.append(v)
    kind = "ivf" if rows >= 200_000 else "flat"
    index.build_ann(kind)
    out = {"rows": len(index), "kind": kind, "build_s": round(time.perf_counter() - start, 1)}
    if kind == "ivf":
        pool = np.concatenate([notes_emb, *sample])  # (N, d) in table order
        ids = np.array(list(notes_ids) + [f"r{i:07d}" for i in range(rows)])
        hits = 0
        for qi in rng.integers(0, len(pool), 20):
            exact = ids[np.argsort(-(pool @ pool[qi]))[:k]]
            got = [h["note_id"] for h in index.search(pool[qi], k, nprobes=nprobes)]
            hits += len(set(exact) & set(got))
        out[f"ivf_recall@{k}_random_vectors"] = round(hits / (20 * k), 3)
    return out


def offline_rate(export: Path, notes: list, batch: int, repeat: int) -> float:
    """Best notes/s of ``Embedder.embed`` over the notes (3 runs)."""
    from notellm2_pl import Embedder

    emb = Embedder.from_pretrained(export)
    emb.embed(notes[:batch], batch_size=batch, progress=False)  # warm-up
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        emb.embed(notes * repeat, batch_size=batch, progress=False)
        best = max(best, len(notes) * repeat / (time.perf_counter() - start))
    return best


def group_rss_mb(pgid: int) -> float:
    """RSS of every process of a process group (the server and its workers), MiB."""
    import psutil

    total = 0
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid:
                total += p.memory_info().rss
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return round(total / 2**20, 1)


def load(port: int, path: str, bodies: list[bytes], clients: int, seconds: float) -> dict:
    """Run ``clients`` threads posting bodies for ``seconds``; throughput, latency percentiles, errors."""
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine, bad = [], 0
        while time.monotonic() < stop:
            body = bodies[int(rng.integers(len(bodies)))]
            t = time.perf_counter()
            try:
                conn.request("POST", path, body, {"content-type": "application/json"})
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            mine.append(time.perf_counter() - t)
            bad += not ok
        with lock:
            lat.extend(mine)
            errors[0] += bad

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.array(lat) * 1e3
    return {"requests": len(lat), "errors": errors[0], "rps": round(len(lat) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def start_server(args: argparse.Namespace, export: Path, index: Path, log: Path) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "notellm2_pl", "serve", "--model", str(export), "--index", str(index), "--port",
           str(port), "--device", "cpu", "--max-batch-size", str(args.max_batch_size), "--batch-timeout",
           str(args.batch_timeout), "--nprobes", str(args.nprobes), "--workers", str(args.workers)]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError(f"serve did not start:\n{log.read_text()[-3000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="Export dir (default: build a tiny one, d=64); needs --data.")
    p.add_argument("--data", help="Dataset root of the notes to embed.")
    p.add_argument("--rows", type=int, default=1_000_000, help="Random vectors in the live index.")
    p.add_argument("--seconds", type=float, default=20.0, help="Load time per phase.")
    p.add_argument("--clients", type=int, default=8, help="Concurrent clients.")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--nprobes", type=int, default=20)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--batch-timeout", type=float, default=0.01)
    p.add_argument("--workdir", help="Work folder (default: a temporary one).")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from notellm2_pl import Embedder
    from notellm2_pl.retrieval.evaluation import load_test_pool

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-serve-"))
    export, data = (Path(args.model), Path(args.data)) if args.model else tiny_export(work)
    ids, notes_by_id, _ = load_test_pool(data)
    notes = [notes_by_id[i] for i in ids]
    emb = Embedder.from_pretrained(export).embed(notes, progress=False)
    offline = offline_rate(export, notes, args.max_batch_size, repeat=8)
    index_info = build_index(work / "live", ids, emb, args.rows, args.nprobes, args.k)

    proc, port = start_server(args, export, work / "live", work / "server.log")
    try:
        rss_start = group_rss_mb(proc.pid)
        rng = np.random.default_rng(1)
        by_id = [json.dumps({"note_id": f"r{int(i):07d}", "k": args.k}).encode()
                 for i in rng.integers(0, args.rows, 1000)]
        neighbours = load(port, "/neighbours", by_id, args.clients, args.seconds)
        one_note = [json.dumps({"notes": [{"title": n.title, "topics": n.topics, "content": n.content,
                                           "image": n.image}]}).encode() for n in notes]
        embed = load(port, "/embed", one_note, args.clients, args.seconds)
        rss_end = group_rss_mb(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    row = {"bench": "serve", "host": platform.node(), "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
           "model": "tiny mICL (d=64)" if not args.model else str(args.model), "clients": args.clients,
           "seconds": args.seconds, "workers": args.workers, "max_batch_size": args.max_batch_size,
           "batch_timeout": args.batch_timeout, "nprobes": args.nprobes, "index": index_info,
           "neighbours_by_id": neighbours, "embed": embed, "embed_offline_notes_per_s": round(offline, 1),
           "embed_served_over_offline": round(embed["rps"] / offline, 3), "rss_mb_start": rss_start,
           "rss_mb_end": rss_end}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
