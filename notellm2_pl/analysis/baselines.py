"""Baselines in every evaluation: which ones, computing them on the model's test pool, and reporting them.

``evaluate`` (and so every ``ablate`` run) reports, next to the model, zero-training baselines ranked on the same
pool, pairs, pair sets and tie rule (docs/evaluation.md#baselines):

* ``tfidf_words``, ``tfidf_char``, ``bm25``: :mod:`notellm2_pl.retrieval.text_baselines` (sparse, tiled, exact);
* ``untrained``: the model's own backbones before training, ``untrained_llm:<name>`` (the text template pooled where
  the model pools, no head) and ``untrained_vision:<name>`` (the tower's pooled image feature), from the recipe,
  checkpoint or export config (:mod:`notellm2_pl.inference.baselines`);
* ``st:PATH``: any sentence-transformers model folder, named ``st:<folder name>``.

:data:`DEFAULT_BASELINES` is the default set; ``--baselines none`` skips them all. Each baseline is computed once per
dataset and settings and then read from the cache (:mod:`notellm2_pl.analysis.baseline_cache`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from notellm2_pl.analysis.baseline_cache import BaselineCache, cache_key, files_fingerprint
from notellm2_pl.atomic import atomic_write_text
from notellm2_pl.data.tables import Note
from notellm2_pl.retrieval.pairs import Pair
from notellm2_pl.retrieval.recall import EvalResult, evaluate_subsets
from notellm2_pl.retrieval.text_baselines import SETTINGS, TEXT_BASELINES, evaluate_text_baseline

log = logging.getLogger(__name__)

UNTRAINED = ("untrained_llm", "untrained_vision")
"""The untrained-backbone baselines; ``untrained`` asks for both (each where the model has that backbone)."""

DEFAULT_BASELINES = "tfidf_words,tfidf_char,bm25,untrained"
"""The default ``--baselines`` list (``st:PATH`` entries come on top)."""

ST_PREFIX = "st:"


# ------------------------------------------------------------------------------------------------ which baselines
@dataclass(frozen=True)
class Baseline:
    """One baseline to compute.

    Attributes:
        name: Unique display name (``tfidf_char``, ``untrained_llm:tiny-qwen2-prior``, ``st:all-MiniLM-L6-v2``).
        kind: ``text``, ``st``, ``untrained_llm`` or ``untrained_vision``.
        spec: What builds it: the text baseline's name, the model folder, or the backbone's config entry.
        settings: Everything its results depend on besides the dataset (JSON-able; part of the cache key).
    """

    name: str
    kind: str
    spec: Any
    settings: dict[str, Any] = field(default_factory=dict)


def parse_baselines(text: str | None, st_paths: Iterable[str] = ()) -> list[str]:
    """The requested baselines of ``--baselines LIST`` plus ``--baseline st:PATH`` entries.

    Args:
        text: Comma-separated names (``none``: no baselines; None: :data:`DEFAULT_BASELINES`).
        st_paths: ``st:PATH`` entries (repeated ``--baseline``).

    Returns:
        The names in order, duplicates removed.

    Raises:
        ValueError: On an unknown name or an entry that is not ``st:PATH``.
    """
    names = [n.strip() for n in (DEFAULT_BASELINES if text is None else text).split(",") if n.strip()]
    if names == ["none"]:
        names = []
    known = (*TEXT_BASELINES, "untrained", *UNTRAINED)
    bad = [n for n in names if n not in known and not n.startswith(ST_PREFIX)]
    if bad:
        raise ValueError(f"Unknown baseline(s) {bad}; choose from {', '.join(known)}, st:PATH (a sentence-transformers "
                         "folder), or none. Example: --baselines tfidf_char,bm25 --baseline st:models/minilm")
    extra = list(st_paths)
    bad = [p for p in extra if not p.startswith(ST_PREFIX) or len(p) == len(ST_PREFIX)]
    if bad:
        raise ValueError(f"--baseline takes st:PATH (a sentence-transformers model folder), got {bad}.")
    return list(dict.fromkeys(names + extra))


def _versions(*packages: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in packages:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "missing"
    return out


def _paths_in(node: Any) -> dict[str, list[tuple[str, int, int]]]:
    """The fingerprint of every existing local path named in a config entry (e.g. a backbone's pretrained folder)."""
    if isinstance(node, Mapping):
        return {k: v for child in node.values() for k, v in _paths_in(child).items()}
    if isinstance(node, (list, tuple)):
        return {k: v for child in node for k, v in _paths_in(child).items()}
    if isinstance(node, str) and node and "\n" not in node and os.path.exists(node):
        return {os.path.abspath(node): files_fingerprint(node)}
    return {}


def _data_settings(data_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The text limits and token budget a templated baseline reads (defaults where the config sets none)."""
    from notellm2_pl.data.prompts import TextLimits
    from notellm2_pl.inference.embedder import DEFAULT_MAX_TOKENS

    d = TextLimits()
    return {"title_chars": int(data_cfg.get("title_chars", d.title_chars)),
            "content_chars": int(data_cfg.get("content_chars", d.content_chars)),
            "max_tags": int(data_cfg.get("max_tags", d.max_tags)),
            "max_tokens": int(data_cfg.get("max_tokens", DEFAULT_MAX_TOKENS))}


def _text_baseline(name: str) -> Baseline:
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in SETTINGS[name].items()}
    return Baseline(name, "text", name, {"kind": "text", "name": name, **settings,
                                         "versions": _versions("scikit-learn", "bm25s", "scipy")})


def _st_baseline(entry: str) -> Baseline:
    path = os.path.abspath(entry[len(ST_PREFIX):])
    return Baseline(f"{ST_PREFIX}{Path(path).name}", "st", path,
                    {"kind": "st", "path": path, "files": files_fingerprint(path),
                     "versions": _versions("sentence-transformers", "transformers", "torch")})


def _untrained_baselines(kind: str, model_cfg: Mapping[str, Any], data_cfg: Mapping[str, Any]) -> list[Baseline]:
    from notellm2_pl.inference.baselines import backbone_label

    part = kind.removeprefix("untrained_")
    spec = model_cfg.get(part)
    if not isinstance(spec, Mapping) or not spec.get("class_path"):
        log.info("No %s baseline: the model has no %s.", kind, part)
        return []
    settings: dict[str, Any] = {"kind": kind, part: spec, "files": _paths_in(spec),
                                "versions": _versions("transformers", "torch", "timm")}
    if part == "llm":
        settings["prompt_preset"] = (model_cfg.get("encoder") or {}).get("prompt_preset", "en")
        settings["data"] = _data_settings(data_cfg)
    return [Baseline(f"{kind}:{backbone_label(spec)}", kind, dict(spec), settings)]


def plan_baselines(requested: Sequence[str], model_cfg: Mapping[str, Any] | None,
                   data_cfg: Mapping[str, Any] | None = None) -> list[Baseline]:
    """The baselines to compute for the requested names (:func:`parse_baselines`).

    Args:
        requested: Names.
        model_cfg: The model's ``model`` section (backbones for ``untrained``), or None (no model: skipped).
        data_cfg: Its ``data`` section (text limits and token budget of the untrained LLM).

    Returns:
        The baselines, in the requested order.
    """
    out: list[Baseline] = []
    for name in requested:
        if name in TEXT_BASELINES:
            out.append(_text_baseline(name))
        elif name.startswith(ST_PREFIX):
            out.append(_st_baseline(name))
        elif model_cfg is None:
            log.info("No %s baseline: no model config (give --model, --ckpt_path, or --config RECIPE).", name)
        else:
            for kind in UNTRAINED if name == "untrained" else (name,):
                out += _untrained_baselines(kind, model_cfg, data_cfg or {})
    return _unique_names(out)


def _unique_names(baselines: list[Baseline]) -> list[Baseline]:
    """Number repeated display names (two model folders of the same name): ``st:minilm``, ``st:minilm#2``."""
    seen: dict[str, int] = {}
    out = []
    for b in baselines:
        seen[b.name] = seen.get(b.name, 0) + 1
        out.append(b if seen[b.name] == 1 else Baseline(f"{b.name}#{seen[b.name]}", b.kind, b.spec, b.settings))
    return out


# ------------------------------------------------------------------------------------------------ computing them
@dataclass(frozen=True)
class BaselinePool:
    """The model's test pool, as the baselines see it.

    Attributes:
        ids: Note ids, in row order.
        notes: The notes in the same order (a lazy sequence is fine).
        pair_sets: ``{pair set: pairs}``.
        ks: Recall cut-offs.
        fingerprint: :func:`~notellm2_pl.analysis.baseline_cache.dataset_fingerprint` of the data source.
        batch_size: Notes per forward pass (model baselines).
        device: Torch device (model baselines).
        num_workers: DataLoader workers for image decoding.
    """

    ids: Sequence[str]
    notes: Sequence[Note]
    pair_sets: Mapping[str, Sequence[Pair]]
    ks: Sequence[int]
    fingerprint: Mapping[str, Any]
    batch_size: int = 64
    device: str = "cpu"
    num_workers: int = 0


def _embed_st(b: Baseline, pool: BaselinePool) -> np.ndarray:
    from notellm2_pl.inference.baselines import sentence_transformer_embeddings

    return sentence_transformer_embeddings(b.spec, pool.notes, pool.batch_size, pool.device)


def _embed_llm(b: Baseline, pool: BaselinePool) -> np.ndarray:
    from notellm2_pl.inference.baselines import untrained_llm_embeddings

    return untrained_llm_embeddings(b.spec, pool.notes, b.settings["data"], b.settings["prompt_preset"],
                                    pool.batch_size, pool.device)


def _embed_vision(b: Baseline, pool: BaselinePool) -> np.ndarray:
    from notellm2_pl.inference.baselines import untrained_vision_embeddings

    return untrained_vision_embeddings(b.spec, pool.notes, pool.batch_size, pool.device, pool.num_workers)


EMBEDDERS: dict[str, Callable[[Baseline, BaselinePool], np.ndarray]] = {
    "st": _embed_st, "untrained_llm": _embed_llm, "untrained_vision": _embed_vision}
"""How each embedding baseline kind embeds the pool."""


def compute_baseline(b: Baseline, pool: BaselinePool) -> dict[str, EvalResult]:
    """Evaluate one baseline on every pair set of the pool (no cache).

    Returns:
        ``{pair set: EvalResult}``.
    """
    if b.kind == "text":
        return evaluate_text_baseline(b.spec, pool.notes, pool.ids, pool.pair_sets, pool.ks)
    return evaluate_subsets(EMBEDDERS[b.kind](b, pool), pool.ids, pool.pair_sets, ks=pool.ks)


def run_baselines(baselines: Sequence[Baseline], pool: BaselinePool,
                  cache: BaselineCache | None = None) -> dict[str, dict[str, EvalResult]]:
    """Every baseline's results on the pool, from the cache where it holds them (then stored there).

    A baseline that fails (a missing image, a broken model folder) is skipped with a warning saying why; the model's
    evaluation goes on.

    Args:
        baselines: From :func:`plan_baselines`.
        pool: The model's test pool.
        cache: The cache, or None to compute everything afresh and store nothing.

    Returns:
        ``{baseline name: {pair set: EvalResult}}`` in the order of ``baselines``.
    """
    out: dict[str, dict[str, EvalResult]] = {}
    for b in baselines:
        key = cache_key(b.name, b.settings, pool.fingerprint, pool.ids, pool.pair_sets)
        hit = cache.load(key, pool.ks) if cache is not None else None
        if hit is not None:
            log.info("Baseline %s: cached (%s).", b.name, cache.paths(key)[0])
            out[b.name] = hit
            continue
        log.info("Baseline %s: computing on %d notes.", b.name, len(pool.ids))
        try:
            results = compute_baseline(b, pool)
        except Exception as err:  # noqa: BLE001 - one broken baseline must not stop the model's evaluation
            log.warning("Baseline %s failed and is left out (%s: %s). Leave it out with --baselines, or fix it.",
                        b.name, type(err).__name__, err)
            continue
        if cache is not None:
            cache.save(key, b.name, b.settings, results)
        out[b.name] = results
    return out


# ------------------------------------------------------------------------------------------------ reporting
def results_section(results: Mapping[str, Mapping[str, EvalResult]],
                    check: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``baselines`` section of ``results.json``: ``{name: {pair set: summary}}``, plus ``check`` when given."""
    section: dict[str, Any] = {name: {s: r.to_dict() for s, r in subsets.items()} for name, subsets in results.items()}
    return {"baselines": section, **({"baseline_check": dict(check)} if check is not None else {})}


def add_to_results_json(path: str | os.PathLike[str], section: Mapping[str, Any]) -> None:
    """Merge a :func:`results_section` into an existing ``results.json`` (rewritten atomically)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    data.update(section)
    atomic_write_text(path, json.dumps(_finite(data), indent=2, allow_nan=False) + "\n")


def _finite(node: Any) -> Any:
    """NaN / infinity -> None, recursively (strict JSON)."""
    if isinstance(node, Mapping):
        return {k: _finite(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_finite(v) for v in node]
    if isinstance(node, float) and not math.isfinite(node):
        return None
    return node


def baseline_recalls(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The baselines of a ``results.json`` as a run record keeps them: ``{name: {"recalls": {pair set: {"K":
    recall}}, "num_queries": {pair set: n}}}`` (empty for results written before baselines existed)."""
    section = results.get("baselines") or {}
    return {name: {"recalls": {s: dict(r.get("recalls", {})) for s, r in subsets.items()},
                   "num_queries": {s: int(r.get("num_queries", 0)) for s, r in subsets.items()}}
            for name, subsets in section.items()}


def report_baselines(results: Mapping[str, Mapping[str, EvalResult]], model: Mapping[str, EvalResult] | None,
                     results_json: str | os.PathLike[str] | None = None, k: int = 10) -> str:
    """The baselines table and the baseline check line, as ``evaluate`` prints them; ``results.json`` gains them.

    Args:
        results: ``{baseline: {pair set: EvalResult}}`` from :func:`run_baselines`.
        model: The model's ``full/e_m`` results ``{pair set: EvalResult}``, or None (no check).
        results_json: ``results.json`` to merge the ``baselines`` / ``baseline_check`` sections into, or None.
        k: The K of the check.

    Returns:
        The text to print (empty without baselines).
    """
    from notellm2_pl.analysis.baseline_check import check_results, format_baseline_check
    from notellm2_pl.retrieval.results import format_table

    if not results:
        return ""
    check = check_results(model, results, k) if model is not None else None
    if results_json is not None:
        add_to_results_json(results_json, results_section(results, check.to_dict() if check is not None else None))
    flat = {f"{name}/{subset}": res for name, subsets in results.items() for subset, res in subsets.items()}
    text = ("Baselines (no training; same pool, pairs and tie rule; docs/evaluation.md#baselines):\n"
            + format_table(flat))
    return text + ("\n\n" + format_baseline_check(check) if check is not None else "")
