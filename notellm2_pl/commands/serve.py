"""``python -m notellm2_pl serve``: the HTTP endpoint (LitServe) over a model export and a live index.

Routes: ``POST /embed``, ``POST /neighbours``, ``POST /notes``, ``DELETE /notes/{note_id}``, ``GET /health``,
``GET /metrics``, ``GET /info``. Design, limits and examples: docs/serving.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
import warnings
from types import FrameType

from notellm2_pl.commands.index import key_value
from notellm2_pl.inference.note_requests import ImageLimits
from notellm2_pl.inference.serving import ServeConfig, build_server


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``serve``."""
    p = argparse.ArgumentParser(
        prog="python -m notellm2_pl serve",
        description="Serve a model export and a live index over HTTP (LitServe): /embed, /neighbours, /notes, "
                    "/health, /metrics. Build the index first: python -m notellm2_pl index --live ...",
        epilog="Example:\n  python -m notellm2_pl serve --model runs/demo/export --index runs/demo/live --port 8000\n"
               "  curl -s localhost:8000/neighbours -H 'content-type: application/json' "
               "-d '{\"note_id\": \"n00012\", \"k\": 5}'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="EXPORT_DIR", help="Model export (python -m notellm2_pl export).")
    p.add_argument("--index", required=True, metavar="PATH_OR_URI",
                   help="Live index: a directory, or an object-store URI (s3://bucket/path, gs://..., az://...).")
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE", type=key_value,
                   help="Object-store option of --index (repeatable), e.g. region=eu-west-1; credentials are best "
                        "left to the environment (AWS_ACCESS_KEY_ID, ...).")
    p.add_argument("--host", default="127.0.0.1", choices=("127.0.0.1", "0.0.0.0", "::"),
                   help="Address to bind (default 127.0.0.1: this machine only).")
    p.add_argument("--port", type=int, default=8000, help="Port (default 8000).")
    p.add_argument("--workers", type=int, default=1, help="Worker processes per device for /embed and /neighbours "
                                                          "(each loads the model; /notes has one writer).")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="Accelerator.")
    p.add_argument("--devices", default="auto", help="How many accelerators (default: all).")
    p.add_argument("--max-batch-size", type=int, default=16, help="Most /embed requests per forward pass.")
    p.add_argument("--batch-timeout", type=float, default=0.005, help="Seconds /embed waits to fill a batch.")
    p.add_argument("--max-payload-mb", type=float, default=16.0, help="Largest request body (413 above).")
    p.add_argument("--max-image-mb", type=float, default=10.0, help="Largest image in a request (413 above).")
    p.add_argument("--max-image-pixels", type=int, default=40_000_000, help="Largest image width x height.")
    p.add_argument("--image-root", default=None, help="Resolve image paths under this folder only.")
    p.add_argument("--no-image-paths", action="store_true", help="Accept images as base64 bytes only.")
    p.add_argument("--nprobes", type=int, default=None, help="IVF partitions visited per search (ivf indexes).")
    p.add_argument("--optimize-every", type=int, default=1000, help="Writes between index compactions (0: never).")
    p.add_argument("--threads", type=int, default=None, help="Torch CPU threads per worker.")
    p.add_argument("--timeout", type=float, default=30.0, help="Seconds a request may wait in a queue (504 after).")
    return p


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run ``serve`` until interrupted; returns the exit code."""
    args = build_parser().parse_args(argv)
    images = ImageLimits(int(args.max_image_mb * 2**20), args.max_image_pixels, args.image_root,
                         not args.no_image_paths)
    devices = int(args.devices) if str(args.devices).isdigit() else "auto"
    cfg = ServeConfig(args.model, args.index, args.device, devices, args.workers, args.max_batch_size,
                      args.batch_timeout, args.max_payload_mb, images, args.nprobes, args.optimize_every,
                      args.threads, dict(args.storage_option), args.timeout)
    try:
        server = build_server(cfg)
    except (FileNotFoundError, ValueError) as err:
        print(f"serve: {err}", file=sys.stderr)
        return 2
    # The processes LitServe forks (queue manager, HTTP server) never touch the index; its workers are spawned.
    warnings.filterwarnings("ignore", message="lancedb fork support", category=RuntimeWarning)
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM (containers, kill) shuts down like Ctrl+C: workers too
    server.run(host=args.host, port=args.port, num_api_servers=1, generate_client_file=False,
               log_level="warning")
    return 0
