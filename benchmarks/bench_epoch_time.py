"""Lightning epoch time (training steps + the epoch's validation) of the demo recipe, with vs without the feature cache.

Runs ``fit --config recipes/demo.yaml`` for two epochs per setting, exactly as the recipe trains (tiny Qwen2 with text
priors, frozen EfficientNet-Lite0 at 128 px, 84 steps of 32 pairs, validation over the 1,000-note extra pool at the end
of each epoch, one loader worker), with checkpoints and logs in a temporary folder. The second epoch is what every
epoch after the first costs. Settings: ``model.encoder.feature_cache false``, and the on-disk store in a fresh folder.

    python benchmarks/bench_epoch_time.py
    python benchmarks/bench_epoch_time.py --extra --model.compile_llm true     # any fit override, both settings
Target: epoch time without cache / with cache >= 2.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from lightning.pytorch.callbacks import Callback


class EpochTimer(Callback):
    """Wall time of each training epoch, its end-of-epoch validation included."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # runs after the epoch-end validation
        self.seconds.append(time.perf_counter() - self._start)


def epoch_times(config: str, cache_args: list[str], extra: list[str], epochs: int) -> list[float]:
    """Per-epoch seconds of ``fit --config config`` with the given overrides."""
    from notellm2_pl.commands.lightning import build_cli

    with tempfile.TemporaryDirectory() as tmp:
        args = ["--config", config, "--trainer.max_epochs", str(epochs), "--trainer.logger", "false",
                "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false",
                "--trainer.default_root_dir", tmp, *[a.replace("{tmp}", tmp) for a in cache_args], *extra]
        cli = build_cli(args, run=False)
        timer = EpochTimer()
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return timer.seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="recipes/demo.yaml")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more fit overrides, for both settings")
    args = p.parse_args()
    settings = {"no cache": ["--model.encoder.feature_cache", "false", "--model.encoder.feature_cache_dir", "null"],
                "disk store (fresh)": ["--model.encoder.feature_cache", "true",
                                       "--model.encoder.feature_cache_dir", "{tmp}/store"]}
    rows = {name: epoch_times(args.config, cache, args.extra, args.epochs) for name, cache in settings.items()}
    print(f"load average at end: {os.getloadavg()}; extra overrides: {args.extra}")
    epochs = " | ".join(f"epoch {i + 1} (s)" for i in range(args.epochs))
    print(f"| setting | {epochs} | later epochs vs no cache |")
    base = rows["no cache"][-1]
    for name, secs in rows.items():
        print(f"| {name} | " + " | ".join(f"{s:.1f}" for s in secs) + f" | {base / secs[-1]:.2f}x |")
    print(f"target: >= 2x (last epoch, no cache / disk store): {base / rows['disk store (fresh)'][-1]:.2f}x")


if __name__ == "__main__":
    main()
