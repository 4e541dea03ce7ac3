"""Model export and reload: one self-contained directory per trained model.

An export is one directory (written atomically)::

    DIR/config.json         resolved config: module init args + llm/vision/connector class paths and init args,
                            processor settings (text limits, max_tokens, preset, variant, image config), which parts
                            are stored and which are references to their pretrained source
    DIR/model.safetensors   weights of every trained or new part (connector, gate, head, tau; the LLM when any of
                            it was trained; the vision tower when it was trained)
    DIR/tokenizer/          the LLM tokenizer, added special tokens included (``AutoTokenizer.from_pretrained``)

Frozen pretrained parts (typically the vision tower) are not copied: ``config.json`` names their source (class path +
init args, local paths made absolute), and reloading builds them from it. Weights are safetensors, never pickle.

Load an export for embedding with ``notellm2_pl.Embedder.from_pretrained(DIR)``
(:mod:`notellm2_pl.inference.embedder`). Command: ``python -m notellm2_pl export --config recipes/demo.yaml
--ckpt_path CKPT --out DIR``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from notellm2_pl.atomic import atomic_dir
from notellm2_pl.data.schema import embedding_keys
from notellm2_pl.inference.factory import DATA_KEYS, build_from_dicts
from notellm2_pl.plugins.contract import LLMBackbone
from notellm2_pl.training.hparams import migrate_hparams
from notellm2_pl.training.module import NoteLLM2Module

log = logging.getLogger(__name__)

FORMAT = "notellm2-export"
WEIGHTS = "model.safetensors"
PRETRAINED_PARTS = ("llm", "vision")  # parts that have a pretrained source and may be stored as a reference


def _absolute_paths(node: Any) -> Any:
    """Make relative local paths in init args absolute, so a reference resolves from any working directory."""
    if isinstance(node, dict):
        return {k: _absolute_paths(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_absolute_paths(v) for v in node]
    if isinstance(node, str) and node and not os.path.isabs(node) and "\n" not in node and os.path.exists(node):
        return str(Path(node).resolve())
    return node


def _json_safe(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def _stored_parts(module: NoteLLM2Module) -> tuple[list[str], list[str]]:
    """(parts whose weights are stored, pretrained parts stored as references)."""
    enc = module.encoder
    stored, referenced = [], []
    for name in PRETRAINED_PARTS:
        part = getattr(enc, name, None)
        if part is None:
            continue
        trained = any(p.requires_grad for p in part.parameters())
        (stored if trained else referenced).append(name)
    return stored, referenced


def _input_embedding(llm: LLMBackbone) -> tuple[str, torch.nn.Parameter] | None:
    """The (name, parameter) of the LLM's input-embedding matrix (rows = vocabulary), if it can be found."""
    n = len(llm.tokenizer)
    for name, p in llm.named_parameters():
        if p.ndim == 2 and p.shape[0] >= n and "emb" in name.lower():
            return name, p
    return None


def _stored_tensors(module: NoteLLM2Module, referenced: list[str]) -> dict[str, torch.Tensor]:
    """CPU copies of the module's weights, minus the parts stored as references."""
    skip = tuple(f"encoder.{p}." for p in referenced)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in module.state_dict().items():
        if k.startswith(skip):
            continue
        t = v.detach().cpu().contiguous()
        if t.data_ptr() in seen:  # safetensors refuses shared storage
            t = t.clone()
        seen.add(t.data_ptr())
        tensors[k] = t
    return tensors


def _added_token_rows(module: NoteLLM2Module, referenced: list[str],
                      tensors: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    """Keep the embedding rows of added special tokens of a frozen (referenced) LLM: their init may be random.

    Stores the rows in ``tensors["_added_rows"]`` and returns the ``added_token_rows`` entry of ``config.json``.
    """
    added = [i for key in ("open", "close", "marker") for i in module.encoder._token_ids[key]]
    if "llm" not in referenced or not added:
        return None
    found = _input_embedding(module.encoder.llm)
    if found is None:
        return None
    name, weight = found
    tensors["_added_rows"] = weight.detach()[added].cpu().contiguous()
    return {"param": f"encoder.llm.{name}", "ids": added}


def _export_config(module: NoteLLM2Module, model_cfg: Mapping[str, Any], data_cfg: Mapping[str, Any],
                   stored: list[str], referenced: list[str], added_rows: dict[str, Any] | None) -> dict[str, Any]:
    """The ``config.json`` of an export (see the module docstring)."""
    fmt = module.note_format()
    model_cfg = _absolute_paths(copy.deepcopy(dict(model_cfg)))
    return {
        "format": FORMAT,
        "version": 1,
        "model": model_cfg,
        "data": _absolute_paths({k: data_cfg[k] for k in DATA_KEYS if k in data_cfg}),
        "weights": WEIGHTS,
        "stored_parts": ["connector", "gate", "head", "tau"] + stored,
        "referenced_parts": {p: model_cfg.get(p) for p in referenced},
        "added_token_rows": added_rows,
        "note_format": {
            "variant": fmt.variant, "preset": fmt.preset, "marker_id": fmt.marker_id,
            "image_open_ids": fmt.image_open_ids, "image_close_ids": fmt.image_close_ids,
            "image_config": asdict(fmt.image_config) if fmt.image_config is not None else None,
            "vocab_size": len(fmt.tokenizer),
        },
        "embed_dim": int(module.encoder.config.embed_dim),
        "keys": embedding_keys(module.encoder.micl),
    }


def export_model(module: NoteLLM2Module, model_cfg: Mapping[str, Any], data_cfg: Mapping[str, Any],
                 out_dir: str | os.PathLike[str], overwrite: bool = True) -> Path:
    """Write a self-contained export directory (see the module docstring) atomically.

    Args:
        module: The trained module.
        model_cfg: Its resolved ``model`` config (class paths + init args), e.g. from
            :func:`~notellm2_pl.inference.factory.build_from_config`.
        data_cfg: The ``data`` config (text limits and ``max_tokens`` are kept).
        out_dir: Destination directory.
        overwrite: Replace an existing export.

    Returns:
        The export directory.
    """
    stored, referenced = _stored_parts(module)
    tensors = _stored_tensors(module, referenced)
    added_rows = _added_token_rows(module, referenced, tensors)
    config = _export_config(module, model_cfg, data_cfg, stored, referenced, added_rows)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        module.note_format().tokenizer.save_pretrained(str(tmp / "tokenizer"))
        (tmp / "config.json").write_text(json.dumps(_json_safe(config), indent=2) + "\n", encoding="utf-8")
    log.info("Exported %s (stored: %s; referenced: %s) to %s", type(module).__name__,
             ", ".join(config["stored_parts"]), ", ".join(referenced) or "none", out_dir)
    return Path(out_dir)


def export_llm(module: NoteLLM2Module, out_dir: str | os.PathLike[str], overwrite: bool = True) -> Path:
    """Write only the trained LLM (decoder + tokenizer) as a pretrained directory of its plugin.

    Use it to start another training from this one's LLM (e.g. a text-only fine-tune as the LLM of a multimodal
    recipe: ``--model.llm.init_args.pretrained OUT``), or to publish the LLM. Vision tower, connector, gate and
    head are not written.

    Args:
        module: The trained module.
        out_dir: Output directory (replaced atomically).
        overwrite: Replace an existing ``out_dir``; False fails instead.

    Returns:
        ``out_dir``.
    """
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        module.encoder.llm.save_pretrained(tmp)
    log.info("Exported the LLM of %s to %s", type(module).__name__, out_dir)
    return Path(out_dir)


def read_export_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config.json`` of an export directory.

    Raises:
        FileNotFoundError: If ``path`` holds no ``config.json``.
        ValueError: If the config is not an export's.
    """
    cfg_path = Path(path) / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{path} is not a model export (no config.json). Make one with: python -m notellm2_pl "
                                f"export --config RECIPE --ckpt_path CKPT --out {path}")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if cfg.get("format") != FORMAT:
        raise ValueError(f"{cfg_path} is not a {FORMAT} config (format={cfg.get('format')!r}).")
    return cfg


def _restore_added_rows(module: NoteLLM2Module, cfg: Mapping[str, Any], rows: torch.Tensor | None) -> None:
    """Put the stored embedding rows of added special tokens back into a referenced LLM."""
    if rows is None or not cfg.get("added_token_rows"):
        return
    info = cfg["added_token_rows"]
    weight = dict(module.named_parameters())[info["param"]]
    with torch.no_grad():
        weight[info["ids"]] = rows.to(weight.dtype)


def load_exported(path: str | os.PathLike[str],
                  device: str | torch.device = "cpu") -> tuple[NoteLLM2Module, dict[str, Any]]:
    """Rebuild the module of an export directory, weights loaded, in eval mode.

    Args:
        path: Export directory.
        device: Device to put the module on.

    Returns:
        ``(module, config)``.
    """
    path = Path(path)
    cfg = read_export_config(path)
    # serving: no cache writes, and eager layers (compiling needs a C++ compiler on CPU; opt in on the loaded model)
    model_cfg = migrate_hparams(cfg["model"])  # exports written before model.encoder existed are flat
    model_cfg["encoder"] = {**model_cfg.get("encoder", {}), "feature_cache": False, "feature_cache_dir": None}
    model_cfg["compile_llm"] = False
    module = build_from_dicts(model_cfg, cfg.get("data"))
    state = load_file(str(path / cfg["weights"]))
    rows = state.pop("_added_rows", None)
    missing, unexpected = module.load_state_dict(state, strict=False)
    ref = tuple(f"encoder.{p}." for p in cfg["referenced_parts"])
    bad = [k for k in missing if not k.startswith(ref)]
    if bad or unexpected:
        raise ValueError(f"{path}: weights do not match the model built from config.json (missing {bad[:5]}, "
                         f"unexpected {unexpected[:5]}). Re-export the model.")
    _restore_added_rows(module, cfg, rows)
    vocab = len(module.note_format().tokenizer)
    if vocab != cfg["note_format"]["vocab_size"]:
        raise ValueError(f"{path}: the rebuilt tokenizer has {vocab} tokens, the export "
                         f"{cfg['note_format']['vocab_size']}; the referenced pretrained LLM changed. Check "
                         f"{cfg['referenced_parts'].get('llm')}.")
    return module.to(device).eval(), cfg
