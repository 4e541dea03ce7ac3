"""The record of a finished ablation run (its ``done.json``): hyperparameters, final metrics and paths.

Metrics are keyed ``recall/{subset}/{probe}/R@{K}`` (:func:`metric_key`); the probe label gains ``_e_v`` for mICL's
visual embedding. Hyperparameters are the run's identity, the :data:`STANDARD_HPARAMS` ablation axes and the values
of the keys its recipe declares it changes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from notellm2_pl.analysis.baselines import baseline_recalls
from notellm2_pl.analysis.grid import RunSpec, read_header
from notellm2_pl.data.schema import EMBEDDING_KEYS, PROBES

STANDARD_HPARAMS: dict[str, str] = {
    "micl": "model.encoder.micl",
    "late_fusion": "model.encoder.late_fusion",
    "loss_weights": "model.loss_weights",
    "embed_dim": "model.encoder.embed_dim",
    "connector": "model.connector.class_path",
    "num_query_tokens": "model.connector.init_args.num_query_tokens",
    "llm": "model.llm.init_args.pretrained",
    "vision": "model.vision.class_path",
    "splice_mode": "model.encoder.splice_mode",
    "max_steps": "trainer.max_steps",
    "max_epochs": "trainer.max_epochs",
}
"""HParams columns every run gets (name -> dotted key of the resolved config)."""


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists -> ``{"a.b.0.c": value}``; a list of scalars stays one value.

    Args:
        node: A config (or any nested mapping / list).
        prefix: Key prefix of ``node``.

    Returns:
        The flat mapping.
    """
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out if out or not prefix else {prefix: {}}
    if isinstance(node, list) and any(isinstance(v, (Mapping, list)) for v in node):
        out = {}
        for i, v in enumerate(node):
            out.update(flatten(v, f"{prefix}.{i}" if prefix else str(i)))
        return out
    return {prefix: node}


def _hp_value(v: Any) -> int | float | str:
    if isinstance(v, bool):  # strings, so the HParams tab filters them as discrete values
        return "true" if v else "false"
    if isinstance(v, (int, float, str)):
        return v
    if v is None:
        return "none"
    return json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)


def metric_key(subset: str, probe: str, k: int | str) -> str:
    """Scalar tag of one recall: ``recall/{subset}/{probe}/R@{K}``."""
    return f"recall/{subset}/{probe}/R@{k}"


def parse_results(results: Mapping[str, Any]) -> dict[str, float | None]:
    """``evaluate``'s ``results.json`` (``{probe}/{e_m|e_v}/{subset}`` entries) -> ``{metric_key: recall}``.

    Args:
        results: The parsed ``results.json``.

    Returns:
        Recalls by :func:`metric_key`; the probe label of a non-``e_m`` embedding is ``{probe}_{embedding}``.
    """
    out: dict[str, float | None] = {}
    for name, res in results.items():
        parts = name.split("/")
        if len(parts) != 3:
            continue
        probe, emb, subset = parts
        label = probe if emb == EMBEDDING_KEYS[0] else f"{probe}_{emb}"
        for k, v in res.get("recalls", {}).items():
            out[metric_key(subset, label, k)] = None if v is None else float(v)
    return out


def query_counts(results: Mapping[str, Any]) -> dict[str, int]:
    """``{subset: queries}`` of the ``full/e_m`` entries of ``evaluate``'s ``results.json``."""
    prefix = f"{PROBES[0]}/{EMBEDDING_KEYS[0]}/"
    return {name[len(prefix):]: int(res["num_queries"]) for name, res in results.items()
            if name.startswith(prefix) and "num_queries" in res}


def run_hparams(spec: RunSpec, cfg: Mapping[str, Any], changes: Sequence[str] = ()) -> dict[str, Any]:
    """HParams of one run: identity, the standard ablation axes, and the values of the keys its recipe changes.

    Args:
        spec: The run.
        cfg: Its resolved config.
        changes: Dotted keys its recipe declares it changes.

    Returns:
        ``{name: value}`` (booleans and None as strings, lists and dicts as JSON).
    """
    flat = flatten(cfg)
    hp: dict[str, Any] = {"variant": spec.run.name, "seed": spec.seed, "recipe": Path(spec.run.recipe).as_posix(),
                          "changes": ", ".join(changes) or "none", "overrides": " ".join(spec.overrides) or "none"}
    for name, key in STANDARD_HPARAMS.items():
        hp[name] = _hp_value(flat.get(key))
    for c in changes:
        for key, v in flat.items():
            if (key == c or key.startswith(c + ".")) and key not in STANDARD_HPARAMS.values():
                hp[key] = _hp_value(v)
    for sweep, x in dict(spec.run.sweeps).items():
        hp[f"sweep.{sweep}"] = float(x)
    return hp


def build_record(spec: RunSpec, run_dir: Path, cfg: Mapping[str, Any], ckpt: Path, seconds: float) -> dict[str, Any]:
    """The ``done.json`` content of a finished run: hparams, final metrics, paths.

    Args:
        spec: The run.
        run_dir: Its folder (holding ``eval/results.json`` and maybe ``saliency/saliency.json``).
        cfg: Its resolved config.
        ckpt: The checkpoint it was evaluated with.
        seconds: Time this call of the runner spent on it.

    Returns:
        The record.
    """
    header = read_header(spec.configs[-1])
    results = json.loads((run_dir / "eval" / "results.json").read_text(encoding="utf-8"))
    spread = run_dir / "eval" / "spread.json"
    sal = run_dir / "saliency" / "saliency.json"
    return {
        "run_id": spec.run_id, "name": spec.run.name, "seed": spec.seed, "recipe": spec.run.recipe,
        "configs": list(spec.configs), "overrides": list(spec.overrides), "sweeps": dict(spec.run.sweeps),
        "plot": spec.run.plot, "changes": list(header.changes),
        "hparams": run_hparams(spec, cfg, header.changes), "metrics": parse_results(results),
        "num_queries": query_counts(results), "baselines": baseline_recalls(results),
        "spread": json.loads(spread.read_text(encoding="utf-8")) if spread.is_file() else None,
        "checkpoint": os.fspath(ckpt), "run_dir": os.fspath(run_dir), "seconds": round(seconds, 1),
        "saliency": os.fspath(sal) if sal.exists() else None,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
