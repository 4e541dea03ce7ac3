"""Model export, reload and the Python embedding API.

An export is one directory (written atomically)::

    DIR/config.json         resolved config: module init args + llm/vision/connector class paths and init args,
                            processor settings (text limits, max_tokens, preset, variant, image config), which parts
                            are stored and which are references to their pretrained source
    DIR/model.safetensors   weights of every trained or new part (connector, gate, head, tau; the LLM when any of
                            it was trained; the vision tower when it was trained)
    DIR/tokenizer/          the LLM tokenizer, added special tokens included (``AutoTokenizer.from_pretrained``)

Frozen pretrained parts (typically the vision tower) are not copied: ``config.json`` names their source (class path +
init args, local paths made absolute), and reloading builds them from it. Weights are safetensors, never pickle.

Python API::

    from notellm2_pl.inference.export import Embedder
    emb = Embedder.from_pretrained("runs/demo/export").embed(notes, batch_size=64)   # (N, d) numpy

Command: ``python -m notellm2_pl export --config recipes/demo.yaml --ckpt_path CKPT --out DIR``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from notellm2_pl.data.tables import Note
from notellm2_pl.data.prompts import Probe, TextLimits

log = logging.getLogger(__name__)

FORMAT = "notellm2-export"
WEIGHTS = "model.safetensors"
PRETRAINED_PARTS = ("llm", "vision")  # parts that have a pretrained source and may be stored as a reference
DATA_KEYS = ("root", "title_chars", "content_chars", "max_tags", "max_tokens", "short_max_chars", "long_min_chars")
_CLI_EXTRAS = ("trainer", "seed_everything", "ckpt_path", "optimizer", "lr_scheduler", "return_predictions",
               "verbose", "weights_only")


# ------------------------------------------------------------------------------------------------ config -> module
def _parser() -> Any:
    """A jsonargparse parser for the ``model`` and ``data`` sections of a recipe (the LightningCLI schema)."""
    from jsonargparse import ArgumentParser

    from notellm2_pl import registry
    from notellm2_pl.data.datamodule import NoteDataModule
    from notellm2_pl.training.module import NoteLLM2Module

    registry.load_all()
    p = ArgumentParser(parser_mode="omegaconf+", exit_on_error=False)
    p.add_argument("--config", action="config")
    p.add_class_arguments(NoteLLM2Module, "model", fail_untyped=False)
    p.add_class_arguments(NoteDataModule, "data", fail_untyped=False)
    for extra in _CLI_EXTRAS:  # other recipe sections, accepted and ignored
        p.add_argument(f"--{extra}", type=Any, default=None)
    return p


def _instantiate(parser: Any, cfg: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(module, model config dict, data config dict) from a parsed namespace."""
    import yaml

    plain = yaml.safe_load(parser.dump(cfg, skip_none=False, skip_validation=True))
    init = parser.instantiate_classes(cfg)
    return init.model, plain["model"], plain["data"]


def build_from_config(config: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                      overrides: Sequence[str] = ()) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Build the LightningModule of a recipe (pretrained parts loaded, trained parts freshly initialised).

    Args:
        config: Recipe file(s), as given to ``--config``.
        overrides: Extra command-line style overrides, e.g. ``["--model.embed_dim", "32"]``.

    Returns:
        ``(module, model_cfg, data_cfg)``: the module and the resolved ``model`` / ``data`` sections as plain dicts.
    """
    parser = _parser()
    configs = [config] if isinstance(config, (str, os.PathLike)) else list(config)
    args: list[str] = []
    for c in configs:
        args += ["--config", os.fspath(c)]
    cfg = parser.parse_args(args + list(overrides))
    return _instantiate(parser, cfg)


def build_from_dicts(model_cfg: Mapping[str, Any], data_cfg: Mapping[str, Any] | None = None) -> Any:
    """Build the module from resolved ``model`` (and ``data``) config dicts, e.g. those of an export."""
    parser = _parser()
    cfg = parser.parse_object({"model": dict(model_cfg), **({"data": dict(data_cfg)} if data_cfg else {})})
    return _instantiate(parser, cfg)[0]


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


def _load_checkpoint(ckpt_path: str | os.PathLike[str]) -> dict[str, Any]:
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"No checkpoint at {ckpt_path}. Train one with `python -m notellm2_pl fit --config "
                                f"RECIPE` (checkpoints go to <default_root_dir>/checkpoints).")
    # Lightning checkpoints are pickles (hparams, loop state); only load checkpoints you trust.
    return torch.load(ckpt_path, map_location="cpu", weights_only=False)


def build_from_checkpoint(ckpt_path: str | os.PathLike[str], config: str | os.PathLike[str] | None = None,
                          overrides: Sequence[str] = ()) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Build the module of a checkpoint and load its weights.

    Args:
        ckpt_path: Lightning checkpoint (``.ckpt``).
        config: The recipe the checkpoint was trained with. Needed unless the checkpoint's hyperparameters record
            the ``llm`` / ``vision`` / ``connector`` class paths and init args.
        overrides: Recipe overrides (as on the command line).

    Returns:
        ``(module, model_cfg, data_cfg)`` with the checkpoint's weights loaded, in eval mode.
    """
    ckpt = _load_checkpoint(ckpt_path)
    if config is not None:
        module, model_cfg, data_cfg = build_from_config(config, overrides)
    else:
        hp = dict(ckpt.get("hyper_parameters", {}))
        if not isinstance(hp.get("llm"), dict):
            raise ValueError(f"{ckpt_path} does not record its backbones (model.llm / vision / connector). Pass the "
                             f"recipe it was trained with: --config recipes/<recipe>.yaml")
        model_cfg = {k: v for k, v in hp.items() if not k.startswith("_") and k not in ("llm_class", "vision_class")}
        data_cfg = dict(ckpt.get("datamodule_hyper_parameters", {}))
        module = build_from_dicts(model_cfg, {k: data_cfg[k] for k in DATA_KEYS if k in data_cfg})
    try:
        missing, unexpected = module.load_state_dict(ckpt["state_dict"], strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{ckpt_path} does not match the model of the recipe ({str(err)[:300]}...). Pass the recipe "
                         f"it was trained with (--config), with the same overrides.") from err
    if missing or unexpected:
        raise ValueError(f"{ckpt_path} does not match the model of the recipe (missing keys {missing[:5]}, "
                         f"unexpected keys {unexpected[:5]}). Pass the recipe it was trained with (--config).")
    return module.eval(), model_cfg, data_cfg


# ------------------------------------------------------------------------------------------------ export
def _stored_parts(module: Any) -> tuple[list[str], list[str]]:
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


def _input_embedding(llm: Any) -> tuple[str, torch.nn.Parameter] | None:
    """The (name, parameter) of the LLM's input-embedding matrix (rows = vocabulary), if it can be found."""
    n = len(llm.tokenizer)
    for name, p in llm.named_parameters():
        if p.ndim == 2 and p.shape[0] >= n and "emb" in name.lower():
            return name, p
    return None


def export_model(module: Any, model_cfg: Mapping[str, Any], data_cfg: Mapping[str, Any],
                 out_dir: str | os.PathLike[str], overwrite: bool = True) -> Path:
    """Write a self-contained export directory (see the module docstring) atomically.

    Args:
        module: The trained :class:`~notellm2_pl.training.module.NoteLLM2Module`.
        model_cfg: Its resolved ``model`` config (class paths + init args), e.g. from :func:`build_from_config`.
        data_cfg: The ``data`` config (text limits and ``max_tokens`` are kept).
        out_dir: Destination directory.
        overwrite: Replace an existing export.

    Returns:
        The export directory.
    """
    from safetensors.torch import save_file

    from notellm2_pl.atomic import atomic_dir

    stored, referenced = _stored_parts(module)
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
    fmt = module.note_format()
    added = [i for key in ("open", "close", "marker") for i in module.encoder._token_ids[key]]
    added_rows = None
    if "llm" in referenced and added:  # new token rows of a frozen LLM: keep them (their init may be random)
        found = _input_embedding(module.encoder.llm)
        if found is not None:
            name, weight = found
            tensors["_added_rows"] = weight.detach()[added].cpu().contiguous()
            added_rows = {"param": f"encoder.llm.{name}", "ids": added}
    model_cfg = _absolute_paths(copy.deepcopy(dict(model_cfg)))
    config = {
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
        "embed_dim": int(module.hparams.get("embed_dim", 0)),
        "keys": ["e_m", "e_v"] if module.encoder.micl else ["e_m"],
    }
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        fmt.tokenizer.save_pretrained(str(tmp / "tokenizer"))
        (tmp / "config.json").write_text(json.dumps(_json_safe(config), indent=2) + "\n", encoding="utf-8")
    log.info("Exported %s (stored: %s; referenced: %s) to %s", type(module).__name__,
             ", ".join(config["stored_parts"]), ", ".join(referenced) or "none", out_dir)
    return Path(out_dir)


def export_llm(module: Any, out_dir: str | os.PathLike[str], overwrite: bool = True) -> Path:
    """Write only the trained LLM (decoder + tokenizer) as a pretrained directory of its plugin.

    Use it to start another training from this one's LLM (e.g. a text-only fine-tune as the LLM of a multimodal
    recipe: ``--model.llm.init_args.pretrained OUT``), or to publish the LLM. Vision tower, connector, gate and
    head are not written.

    Args:
        module: The trained ``NoteLLM2Module``.
        out_dir: Output directory (replaced atomically).
        overwrite: Replace an existing ``out_dir``; False fails instead.

    Returns:
        ``out_dir``.
    """
    from notellm2_pl.atomic import atomic_dir

    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        module.encoder.llm.save_pretrained(tmp)
    log.info("Exported the LLM of %s to %s", type(module).__name__, out_dir)
    return Path(out_dir)


def read_export_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config.json`` of an export directory."""
    cfg_path = Path(path) / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{path} is not a model export (no config.json). Make one with: python -m notellm2_pl "
                                f"export --config RECIPE --ckpt_path CKPT --out {path}")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if cfg.get("format") != FORMAT:
        raise ValueError(f"{cfg_path} is not a {FORMAT} config (format={cfg.get('format')!r}).")
    return cfg


def load_exported(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[Any, dict[str, Any]]:
    """Rebuild the module of an export directory, weights loaded, in eval mode.

    Args:
        path: Export directory.
        device: Device to put the module on.

    Returns:
        ``(module, config)``.
    """
    from safetensors.torch import load_file

    path = Path(path)
    cfg = read_export_config(path)
    # serving: no cache writes, and eager layers (compiling needs a C++ compiler on CPU; opt in on the loaded model)
    model_cfg = {**cfg["model"], "feature_cache": False, "feature_cache_dir": None, "compile_llm": False}
    module = build_from_dicts(model_cfg, cfg.get("data"))
    state = load_file(str(path / cfg["weights"]))
    rows = state.pop("_added_rows", None)
    missing, unexpected = module.load_state_dict(state, strict=False)
    ref = tuple(f"encoder.{p}." for p in cfg["referenced_parts"])
    bad = [k for k in missing if not k.startswith(ref)]
    if bad or unexpected:
        raise ValueError(f"{path}: weights do not match the model built from config.json (missing {bad[:5]}, "
                         f"unexpected {unexpected[:5]}). Re-export the model.")
    if rows is not None and cfg.get("added_token_rows"):
        info = cfg["added_token_rows"]
        weight = dict(module.named_parameters())[info["param"]]
        with torch.no_grad():
            weight[info["ids"]] = rows.to(weight.dtype)
    vocab = len(module.note_format().tokenizer)
    if vocab != cfg["note_format"]["vocab_size"]:
        raise ValueError(f"{path}: the rebuilt tokenizer has {vocab} tokens, the export {cfg['note_format']['vocab_size']}"
                         f"; the referenced pretrained LLM changed. Check {cfg['referenced_parts'].get('llm')}.")
    return module.to(device).eval(), cfg


# ------------------------------------------------------------------------------------------------ Python API
NoteLike = Note | Mapping[str, Any]


def to_note(obj: NoteLike, index: int = 0) -> Note:
    """A :class:`Note` from a Note or a dict with ``title``, ``topics`` (list or ``"a|b"``), ``content``, ``image``."""
    if isinstance(obj, Note):
        return obj
    topics = obj.get("topics") or []
    if isinstance(topics, str):
        topics = [t for t in topics.split("|") if t]
    image = obj.get("image")
    return Note(note_id=str(obj.get("note_id", f"note{index}")), title=str(obj.get("title") or ""),
                topics=[str(t) for t in topics], content=str(obj.get("content") or ""),
                image=os.fspath(image) if image else None)


class _Notes(torch.utils.data.Dataset):
    def __init__(self, notes: list[Note], processor: Any) -> None:
        self.notes, self.processor = notes, processor

    def __len__(self) -> int:
        return len(self.notes)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.processor(self.notes[i], train=False)


class Embedder:
    """Embeds notes with a trained model: batched, deterministic (eval transforms), optional progress bar.

    Args:
        module: A :class:`~notellm2_pl.training.module.NoteLLM2Module` (or anything with ``note_format()`` and ``forward``).
        limits: Character cuts of the text fields (as in training; default ``TextLimits()``).
        max_tokens: Token budget of the templated note (as in training).
        device: Device to run on (default: the module's).
        num_workers: DataLoader workers for tokenising and image decoding.
    """

    def __init__(self, module: Any, limits: TextLimits | None = None, max_tokens: int = 140,
                 device: str | torch.device | None = None, num_workers: int = 0) -> None:
        self.module = module.eval()
        if device is not None:
            self.module.to(device)
        self.device = next(self.module.parameters()).device
        self.limits, self.max_tokens, self.num_workers = limits or TextLimits(), max_tokens, num_workers
        self._processors: dict[str, Any] = {}

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu",
                        num_workers: int = 0) -> Embedder:
        """Load an export directory written by :func:`export_model` / ``python -m notellm2_pl export``."""
        module, cfg = load_exported(path, device)
        return cls(module, *_processor_settings(cfg.get("data", {})), num_workers=num_workers)

    @classmethod
    def from_checkpoint(cls, ckpt_path: str | os.PathLike[str], config: str | os.PathLike[str] | None = None,
                        overrides: Sequence[str] = (), device: str | torch.device = "cpu",
                        num_workers: int = 0) -> Embedder:
        """Load a Lightning checkpoint (with the recipe it was trained with, unless its hparams suffice)."""
        module, _, data_cfg = build_from_checkpoint(ckpt_path, config, overrides)
        return cls(module.to(device), *_processor_settings(data_cfg), num_workers=num_workers)

    @property
    def keys(self) -> list[str]:
        """Embedding kinds the model produces: ``["e_m"]``, plus ``"e_v"`` for mICL models."""
        return ["e_m", "e_v"] if getattr(self.module.encoder, "micl", False) else ["e_m"]

    def processor(self, probe: Probe = "full") -> Any:
        """The note processor of a probe (``full``, ``only_image``, ``only_text``)."""
        from notellm2_pl.data.processing import NoteProcessor

        if probe not in self._processors:
            self._processors[probe] = NoteProcessor(self.module.note_format(), self.limits, self.max_tokens, probe)
        return self._processors[probe]

    def embed(self, notes: Iterable[NoteLike], batch_size: int = 32, progress: bool = True, probe: Probe = "full",
              key: str = "e_m") -> np.ndarray:
        """Embed notes into an ``(N, d)`` float32 matrix of L2-normalised rows, in input order.

        Args:
            notes: :class:`~notellm2_pl.data.tables.Note` objects or dicts with ``title``, ``topics``, ``content`` and
                ``image`` (a file path).
            batch_size: Notes per forward pass.
            progress: Show a tqdm progress bar when there is more than one batch.
            probe: Input probe: ``full``, ``only_image`` (empty text) or ``only_text`` (blank image).
            key: ``e_m`` (multimodal embedding) or ``e_v`` (mICL visual embedding).

        Returns:
            The embeddings.
        """
        return self.embed_all(notes, batch_size, progress, probe, keys=(key,))[key]

    def embed_all(self, notes: Iterable[NoteLike], batch_size: int = 32, progress: bool = True,
                  probe: Probe = "full", keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Like :meth:`embed`, returning every requested embedding kind (default: all of :attr:`keys`)."""
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm

        from notellm2_pl.data.processing import collate

        keys = list(keys or self.keys)
        for k in keys:
            if k not in self.keys:
                raise KeyError(f"This model has no {k!r} embedding (it has {self.keys}); e_v needs model.micl true.")
        items = [to_note(n, i) for i, n in enumerate(notes)]
        out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        loader = DataLoader(_Notes(items, self.processor(probe)), batch_size=batch_size, collate_fn=collate,
                            num_workers=self.num_workers)
        bar = tqdm(loader, desc=f"embed ({probe})", unit="batch", disable=not progress or len(items) <= batch_size)
        with torch.inference_mode():
            for batch in bar:
                batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                res = self.module(batch)
                for k in keys:
                    out[k].append(getattr(res, k).float().cpu().numpy())
        dim = int(self.module.hparams.get("embed_dim", 0)) if hasattr(self.module, "hparams") else 0
        return {k: np.concatenate(v) if v else np.zeros((0, dim), np.float32) for k, v in out.items()}


def _processor_settings(data_cfg: Mapping[str, Any]) -> tuple[TextLimits, int]:
    d = TextLimits()
    limits = TextLimits(int(data_cfg.get("title_chars", d.title_chars)),
                        int(data_cfg.get("content_chars", d.content_chars)),
                        int(data_cfg.get("max_tags", d.max_tags)))
    return limits, int(data_cfg.get("max_tokens", 140))


# ------------------------------------------------------------------------------------------------ CLI
def cli_main(argv: list[str] | None = None) -> int:
    """``python -m notellm2_pl export``: write a model export directory from a checkpoint."""
    p = argparse.ArgumentParser(
        prog="python -m notellm2_pl export",
        description="Export a trained model to one directory (config.json, model.safetensors, tokenizer/) that "
                    "Embedder.from_pretrained(DIR) and `evaluate --model DIR` / `search --model DIR` load.",
        epilog="Other arguments are recipe overrides (as for fit). Example: python -m notellm2_pl export --config recipes/demo.yaml "
               "--ckpt_path runs/demo/checkpoints/best.ckpt --out runs/demo/export",
    )
    p.add_argument("--ckpt_path", required=True, help="Lightning checkpoint to export.")
    p.add_argument("--config", default=None, help="Recipe the checkpoint was trained with (needed unless the "
                                                  "checkpoint's hyperparameters name the backbones).")
    p.add_argument("--out", required=True, help="Export directory (replaced atomically if it exists).")
    p.add_argument("--no_overwrite", action="store_true", help="Fail instead of replacing an existing --out.")
    p.add_argument("--llm_only", action="store_true",
                   help="Write only the trained LLM and its tokenizer, as its plugin's pretrained directory (for "
                        "--model.llm.init_args.pretrained OUT in a later recipe).")
    args, overrides = p.parse_known_args(argv)  # the rest are recipe overrides, e.g. --data.max_tokens 96
    module, model_cfg, data_cfg = build_from_checkpoint(args.ckpt_path, args.config, overrides)
    if args.llm_only:
        out = export_llm(module, args.out, overwrite=not args.no_overwrite)
        print(f"Exported the LLM to {out}. Train from it with: --model.llm.init_args.pretrained {out}")
        return 0
    out = export_model(module, model_cfg, data_cfg, args.out, overwrite=not args.no_overwrite)
    print(f"Exported to {out}. Load it with: Embedder.from_pretrained({str(out)!r}), or run "
          f"`python -m notellm2_pl evaluate --model {out} --data DATA_ROOT`.")
    return 0
