"""Predict throughput (Lightning ``predict`` with the embedding writer, data loading included) vs the bare model
forward on the same, pre-collated batches.

    python benchmarks/bench_predict.py --config recipes/demo.yaml
Target: predict notes/s / bare forward notes/s >= 0.8.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="recipes/demo.yaml")
    p.add_argument("--batches", type=int, default=6, help="evaluation batches (of data.eval_batch_size notes)")
    args = p.parse_args()

    import lightning as L
    import torch

    from notellm2_pl.commands.lightning import build_cli
    from notellm2_pl.retrieval.prediction_writer import EmbeddingWriter

    argv = ["--config", args.config, "--trainer.logger", "false", "--trainer.callbacks", "[]",
            "--model.encoder.feature_cache", "false"]  # both paths must run the vision tower
    cli = build_cli(argv, run=False)
    module, dm = cli.model.eval(), cli.datamodule
    dm.attach(module)
    dm.setup("predict")
    loader = dm.predict_dataloader()
    batches = [b for _, b in zip(range(args.batches), loader)]
    notes = sum(len(b["note_ids"]) for b in batches)

    with torch.inference_mode():
        module(batches[0])  # warm-up
        start = time.perf_counter()
        for b in batches:
            module(b)
        bare = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as out:
        trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                            limit_predict_batches=args.batches, callbacks=[EmbeddingWriter(output_dir=out)])
        start = time.perf_counter()
        trainer.predict(module, datamodule=dm, return_predictions=False)
        predict = time.perf_counter() - start

    print(f"load average: {os.getloadavg()}")
    print(f"bare forward : {notes} notes in {bare:6.1f} s = {notes / bare:6.1f} notes/s (pre-collated batches)")
    print(f"predict      : {notes} notes in {predict:6.1f} s = {notes / predict:6.1f} notes/s (loading + writer)")
    print(f"ratio predict / bare: {bare / predict:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
