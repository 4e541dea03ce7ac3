"""Streaming data (litdata) against the in-memory path: loader throughput on the demo data, and the peak memory of a
loader over 10 k versus 1 M prepared notes with tiny images (it must stay flat).

Throughput: the demo dataset (``python -m notellm2_pl synth --out DEMO --preset demo``) is prepared once, then the
training loader (pairs, 2 notes each) and the predict loader (the train pool) of
:class:`~notellm2_pl.data.datamodule.NoteDataModule` are read to the end with each path, one process (no loader
workers, one torch thread), with the demo recipe's note format (tiny Qwen2 tokenizer, 128 px images, 96 tokens).
Every note decodes its image, so notes/s is also images decoded/s. Setup (in-memory: load and check every row and
image; streaming: read ids and pairs) is timed apart.

Memory: notes datasets of N notes (one 16x16 PNG each, text of ~100 characters) are written with the prepare
writer's item format; a child process per N reads every note through a ``StreamingDataLoader`` (decoding each
image) and reports the RSS before reading and the peak RSS while reading (VmHWM, reset after the imports; the
process's ``ru_maxrss`` is reported too, but on Linux it carries over the benchmark parent's mark through fork and
exec). Anonymous and file-backed RSS are reported apart: the chunks are memory-mapped, so pages read stay counted
as file-backed RSS (page cache the kernel reclaims under pressure), while the loader's own memory is anonymous.

Appends one JSON line to benchmarks/results/streaming.jsonl::

    python benchmarks/bench_streaming.py --demo /tmp/demo --sizes 10000 1000000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "streaming.jsonl"


def demo_processor(workdir: Path) -> Any:
    """The demo recipe's note format without its model: tiny Qwen2 tokenizer, mICL template, 128 px images."""
    from transformers import AutoTokenizer

    from notellm2_pl.data.processing import NoteFormat, NoteProcessor
    from notellm2_pl.data.prompts import TextLimits
    from notellm2_pl.plugins.contract import ImageConfig
    from notellm2_pl.plugins.testing import make_tiny_llm_checkpoint

    tok = AutoTokenizer.from_pretrained(make_tiny_llm_checkpoint(workdir / "llm"))
    tok.add_tokens(["<img>", "</img>", "<IMG_EMB>"], special_tokens=True)
    o, c, m = tok.convert_tokens_to_ids(["<img>", "</img>", "<IMG_EMB>"])
    image = ImageConfig(128, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic")
    fmt = NoteFormat(tokenizer=tok, image_config=image, variant="micl", preset="en", image_open_ids=[o],
                     image_close_ids=[c], marker_id=m)
    return NoteProcessor(fmt, TextLimits(), max_tokens=96)


def _read(loader: Any) -> tuple[int, int, float]:
    """(notes, images decoded, seconds) to read a loader to the end."""
    notes = images = 0
    start = time.perf_counter()
    for batch in loader:
        notes += len(batch["note_ids"])
        images += int(batch["pixel_values"].shape[0])  # (B, 3, S, S): one decoded image per note
    return notes, images, time.perf_counter() - start


def throughput(demo: str, prepared: str, workdir: Path, batch_size: int) -> dict[str, Any]:
    """Setup time and notes/s of the training and predict loaders, in memory and streaming."""
    from notellm2_pl.data.datamodule import NoteDataModule

    processor = demo_processor(workdir)
    out: dict[str, Any] = {}
    for name, streaming in (("in_memory", None), ("streaming", prepared)):
        dm = NoteDataModule(demo, batch_size=batch_size, eval_batch_size=128, max_tokens=96, predict_split="train",
                            streaming=streaming)
        dm.processor = processor
        start = time.perf_counter()
        dm.setup("fit")
        row: dict[str, Any] = {"setup_s": round(time.perf_counter() - start, 2)}
        for loader in ("train", "predict"):
            notes, images, sec = _read(getattr(dm, f"{loader}_dataloader")())
            row[loader] = {"notes": notes, "images_decoded": images, "seconds": round(sec, 2),
                           "notes_per_s": round(notes / sec, 1)}
        out[name] = row
    return out


# -------------------------------------------------------------------------------------------------------- memory
def tiny_png(i: int) -> bytes:
    """A 16x16 PNG of a colour derived from ``i``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (i % 251, (i * 7) % 253, (i * 13) % 255)).save(buf, format="PNG")
    return buf.getvalue()


def write_notes(out: Path, n: int) -> float:
    """A prepared notes dataset of ``n`` notes (the prepare writer's item format); returns seconds."""
    from litdata.streaming.writer import BinaryWriter

    from notellm2_pl.data.streaming.layout import text_leaf

    images = [tiny_png(i) for i in range(64)]
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    writer = BinaryWriter(str(out), chunk_bytes="64MB")
    for i in range(n):
        fields = [f"n{i:08d}", f"note {i} title", ["tag", f"c{i % 97}"], "content " * 10, f"images/{i}.png"]
        writer[i] = {"fields": text_leaf(json.dumps(fields)), "image": images[i % 64]}
    writer.done()
    writer.merge()
    return time.perf_counter() - start


def rss_child(notes_dir: str) -> None:
    """(Child process) read every note of ``notes_dir``, decoding its image; print RSS figures as JSON."""
    os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # no PyPI query (notellm2_pl.data.streaming)
    from litdata import StreamingDataLoader, StreamingDataset

    from notellm2_pl.data.images import load_image
    from notellm2_pl.data.streaming.layout import note_from_item

    def decode(item: dict[str, Any]) -> int:
        note = note_from_item(item)
        return load_image(note.image, note.image_bytes).size[0]

    ds = StreamingDataset(notes_dir, transform=decode)
    loader = StreamingDataLoader(ds, batch_size=256, num_workers=0)
    before = _status_mb("VmRSS")
    _reset_peak_rss()  # the peak of the read alone, not of the imports before it
    start, notes = time.perf_counter(), 0
    for batch in loader:
        notes += len(batch)
    print(json.dumps({"notes": notes, "seconds": round(time.perf_counter() - start, 2), "rss_before_mb": before,
                      "peak_rss_mb": _status_mb("VmHWM"), "rss_after_mb": _status_mb("VmRSS"),
                      "rss_anon_after_mb": _status_mb("RssAnon"), "rss_file_after_mb": _status_mb("RssFile"),
                      "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def _reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux ``clear_refs`` 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def memory(sizes: list[int], workdir: Path) -> list[dict[str, Any]]:
    """Write and read (in a child process) a notes dataset of each size."""
    rows = []
    for n in sizes:
        path = workdir / f"notes_{n}"
        write_s = write_notes(path, n)
        size_mb = sum(f.stat().st_size for f in path.iterdir()) / 2**20
        res = subprocess.run([sys.executable, __file__, "--rss-child", str(path)], capture_output=True, text=True,
                             check=True)
        row = {"notes": n, "write_s": round(write_s, 1), "dataset_mb": round(size_mb, 1),
               **json.loads(res.stdout.strip().splitlines()[-1])}
        print(row, flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Prepare the demo data, measure both paths, measure memory per size, append the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", default="/tmp/demo", help="demo dataset (generated there if missing)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000], help="notes per memory run")
    ap.add_argument("--batch-size", type=int, default=32, help="training pairs per batch (demo recipe: 32)")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # one loader process on a shared machine: more threads only oversubscribe the cores
    if args.rss_child:
        rss_child(args.rss_child)
        return
    from notellm2_pl.data.streaming.prepare import PrepareOptions, prepare
    from notellm2_pl.data.synthetic import ensure_dataset, preset_config

    ensure_dataset(args.demo, preset_config("demo"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        prepare(args.demo, str(work / "prepared"), PrepareOptions())
        row: dict[str, Any] = {"bench": "streaming", "cpus": os.cpu_count(), "demo": args.demo,
                               "prepare_s": round(time.perf_counter() - start, 1)}
        row["throughput"] = throughput(args.demo, str(work / "prepared"), work, args.batch_size)
        print(json.dumps(row["throughput"], indent=2), flush=True)
        row["memory"] = memory(args.sizes, work)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
