"""Config errors in the user's words: checked before LightningCLI parses, with "did you mean" and what to type.

jsonargparse's own messages for the two most common mistakes are hard to act on: an unknown plugin name gives
"Expected a dot import path string: HFCausalLMX", and a key typo gives "Group 'model' does not accept option
'mcl'". :func:`preflight` looks at the ``--config`` files and the command-line overrides first and, for those two
mistakes only, returns a message naming the file or flag, the closest valid name and the command that lists the
valid ones. It also stops a GPU recipe (``trainer.accelerator: gpu``) on a machine without a GPU, saying which
overrides run it on the CPU. Anything it does not understand is left to jsonargparse.

The valid keys are read from the code: the signatures of ``NoteLLM2Module``, ``NoteDataModule`` and
``lightning.Trainer``, the fields of the settings dataclasses among the module's parameters (``model.encoder``),
and the plugins' own signatures.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

from notellm2_pl import registry
from notellm2_pl.data.datamodule import NoteDataModule
from notellm2_pl.inference.factory import CLI_ONLY_KEYS
from notellm2_pl.training.module import NoteLLM2Module

PLUGIN_KEYS = ("llm", "vision", "connector")
"""``model`` keys that name a plugin (the registry kind has the same name)."""
TOP_KEYS = frozenset({"model", "data", "config", "print_config", *CLI_ONLY_KEYS})
HELP = "`python -m notellm2_pl fit --help` lists every option."
GPU_ACCELERATORS = frozenset({"gpu", "cuda"})
DEVICE_KEYS = ("accelerator", "devices", "strategy", "precision")
"""``trainer`` settings that decide where a run goes; the last ``--config`` file or override that sets one wins."""
CPU_SETTINGS = {"devices": "1", "strategy": "auto", "precision": "32-true"}
"""What a CPU run needs besides ``accelerator: cpu``: one process, no distributed strategy, fp32."""


@dataclasses.dataclass
class Schema:
    """Valid option names: per top-level group, and per nested settings group (``model.encoder``)."""

    groups: dict[str, set[str]]
    nested: dict[tuple[str, str], set[str]]


def _params(obj: Any) -> set[str]:
    try:
        return {p for p in inspect.signature(obj).parameters if p not in ("self", "args", "kwargs")}
    except (TypeError, ValueError):
        return set()


def _dataclass_groups(cls: type) -> dict[str, set[str]]:
    """``{parameter: field names}`` for the parameters of ``cls`` whose default is a settings dataclass."""
    out = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if dataclasses.is_dataclass(param.default) and not isinstance(param.default, type):
            out[name] = {f.name for f in dataclasses.fields(param.default)}
    return out


def known_schema() -> Schema:
    """The option names the Lightning commands accept, read from the classes they build."""
    groups = {"model": _params(NoteLLM2Module.__init__), "data": _params(NoteDataModule.__init__),
              "trainer": _params(L.Trainer.__init__)}
    nested = {("model", k): v for k, v in _dataclass_groups(NoteLLM2Module).items()}
    return Schema(groups, nested)


def _did_you_mean(name: str, options: set[str] | frozenset[str]) -> str:
    close = difflib.get_close_matches(name, sorted(options), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def _unknown_key(where: str, top: str, key: str, schema: Schema) -> str:
    """The message for an unknown ``top.key``; a key that lives in a nested group says where it lives now."""
    for (group, sub), names in schema.nested.items():
        if group == top and key in names:
            return f"{where}: {top} has no option {key!r}; it is set as {top}.{sub}.{key} now."
    return f"{where}: {top} has no option {key!r}.{_did_you_mean(key, schema.groups[top])} {HELP}"


def _plugin_problem(kind: str, name: Any, where: str) -> str | None:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_]\w*", name) or name.lower() in ("null", "none"):
        return None  # dotted paths, JSON/YAML values and files are left to jsonargparse
    if name in registry.names(kind):
        return None
    try:
        registry.get(kind, name)
    except registry.PluginError as err:
        return f"{where}: {err}"
    return None


def _init_args_problem(kind: str, name: str, init: dict, where: str) -> str | None:
    try:
        cls = registry.resolve(kind, name)
    except Exception:  # noqa: BLE001 - import problems are reported by jsonargparse itself
        return None
    params = _params(cls.__init__)
    if kind == "connector":
        params -= {"in_dim", "out_dim"}
    for key in init:
        if params and key not in params:
            return (f"{where}: model.{kind}.init_args has no option {key!r} for {name}."
                    f"{_did_you_mean(key, params)} Options: {', '.join(sorted(params))}.")
    return None


def _plugin_entry_problem(key: str, sub: Any, where: str) -> str | None:
    """Problems of one ``model.<plugin>`` entry: its plugin name, then its ``init_args`` keys."""
    name = sub.get("class_path") if isinstance(sub, dict) else sub
    problem = _plugin_problem(key, name, f"{where}: model.{key}")
    init = sub.get("init_args") if isinstance(sub, dict) else None
    if problem is None and isinstance(init, dict) and isinstance(name, str):
        problem = _init_args_problem(key, name, init, where)
    return problem


def _check_group(top: str, value: dict, where: str, schema: Schema) -> str | None:
    for key, sub in value.items():
        if key not in schema.groups[top]:
            return _unknown_key(where, top, key, schema)
        nested = schema.nested.get((top, key))
        if nested is not None and isinstance(sub, dict):
            for name in sub:
                if name not in nested:
                    return (f"{where}: {top}.{key} has no option {name!r}.{_did_you_mean(name, nested)} "
                            f"Options: {', '.join(sorted(nested))}.")
        if top == "model" and key in PLUGIN_KEYS:
            problem = _plugin_entry_problem(key, sub, where)
            if problem:
                return problem
    return None


def _check_tree(cfg: dict, where: str, schema: Schema) -> str | None:
    for top, value in cfg.items():
        if top not in TOP_KEYS:
            return f"{where}: unknown top-level key {top!r}.{_did_you_mean(top, TOP_KEYS)}"
        if top in schema.groups and isinstance(value, dict):
            problem = _check_group(top, value, where, schema)
            if problem:
                return problem
    return None


def _split_argv(argv: list[str]) -> tuple[list[str], list[tuple[str, str | None]]]:
    configs, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
        if arg in ("--config", "-c") and nxt is not None:
            configs.append(nxt)
            i += 2
            continue
        if arg.startswith("--config="):
            configs.append(arg.split("=", 1)[1])
        elif arg.startswith("--") and "." in arg:
            key, eq, val = arg[2:].partition("=")
            if eq:
                overrides.append((key, val))
            else:
                overrides.append((key, nxt))
                i += nxt is not None
        i += 1
    return configs, overrides


def _check_config_file(path: str, schema: Schema, plugins: dict[str, str],
                       device: dict[str, tuple[Any, str]]) -> str | None:
    """Check one ``--config`` file; record the plugin names it sets in ``plugins``, its :data:`DEVICE_KEYS` in
    ``device`` (``key -> (value, file)``)."""
    if not Path(path).is_file():
        return f"Config file {path} not found. Recipes live in recipes/ (e.g. --config recipes/demo.yaml)."
    try:
        cfg = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        return f"{path} is not valid YAML: {err}"
    if not isinstance(cfg, dict):
        return None
    trainer = cfg.get("trainer")
    device.update({k: (trainer[k], path) for k in DEVICE_KEYS if isinstance(trainer, dict) and k in trainer})
    model = cfg.get("model")
    for kind, sub in model.items() if isinstance(model, dict) else []:
        name = sub.get("class_path") if isinstance(sub, dict) else sub
        if kind in PLUGIN_KEYS and isinstance(name, str):
            plugins[kind] = name
    return _check_tree(cfg, path, schema)


def _unknown_override(key: str, parts: list[str], schema: Schema) -> str | None:
    """An override naming an option that does not exist (unique prefixes are fine: argparse accepts them)."""
    top = parts[0]
    if top not in schema.groups or len(parts) < 2:
        return None
    if parts[1] not in schema.groups[top]:
        if len([k for k in schema.groups[top] if k.startswith(parts[1])]) != 1:
            return _unknown_key(f"--{key}", top, parts[1], schema)
        return None
    nested = schema.nested.get((top, parts[1]))
    if nested is not None and len(parts) == 3 and len([k for k in nested if k.startswith(parts[2])]) != 1:
        return (f"--{key}: {top}.{parts[1]} has no option {parts[2]!r}.{_did_you_mean(parts[2], nested)} "
                f"Options: {', '.join(sorted(nested))}.")
    return None


def _check_plugin_override(key: str, parts: list[str], value: str | None, schema: Schema,
                           plugins: dict[str, str]) -> str | None:
    """``--model.<plugin>`` (a name or a JSON value), ``.class_path`` and ``.init_args.<option>`` overrides."""
    kind = parts[1]
    if len(parts) == 2 and isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            sub = yaml.safe_load(value)
        except yaml.YAMLError:
            sub = None
        if isinstance(sub, dict):
            problem = _check_tree({"model": {kind: sub}}, f"--{key}", schema)
            if problem:
                return problem
            value = sub.get("class_path")
    if len(parts) == 2 or parts[2] == "class_path":
        problem = _plugin_problem(kind, value, f"--{key}")
        if problem:
            return problem
        if isinstance(value, str):
            plugins[kind] = value
    if len(parts) == 4 and kind in plugins and parts[2] == "init_args":
        return _init_args_problem(kind, plugins[kind], {parts[3]: value}, f"--{key}")
    return None


def _accelerator_problem(device: dict[str, tuple[Any, str]]) -> str | None:
    """A GPU accelerator on a machine without one: say so, and which overrides run the recipe on the CPU."""
    accelerator, where = device.get("accelerator", ("auto", ""))
    if not isinstance(accelerator, str) or accelerator.lower() not in GPU_ACCELERATORS or torch.cuda.is_available():
        return None
    flags = ["--trainer.accelerator cpu"]
    for key, cpu_value in CPU_SETTINGS.items():
        value = device.get(key, (None, ""))[0]
        if key == "precision" or (value is not None and str(value) not in (cpu_value, "auto")):
            flags.append(f"--trainer.{key} {cpu_value}")
    return (f"{where}: trainer.accelerator is {accelerator!r}, but this machine has no CUDA GPU "
            f"(torch.cuda.is_available() is False). To run on the CPU instead, add:\n    {' '.join(flags)}\n"
            f"(on the CPU train in fp32, precision 32-true: 16-mixed needs a GPU and bf16-mixed is slow there).")


def preflight(argv: list[str]) -> str | None:
    """Check plugin names and option keys of ``--config`` files and overrides, and that a GPU recipe has a GPU;
    return a message, or None if fine.

    Args:
        argv: The arguments after the subcommand (``fit``, ...).
    """
    configs, overrides = _split_argv(argv)
    schema = known_schema()
    plugins: dict[str, str] = {}  # kind -> plugin name in effect (configs, then overrides)
    device: dict[str, tuple[Any, str]] = {}  # trainer setting -> (value in effect, where it was set)
    for path in configs:
        problem = _check_config_file(path, schema, plugins, device)
        if problem:
            return problem
    for key, value in overrides:
        parts = key.split(".")
        problem = _unknown_override(key, parts, schema)
        if problem is None and parts[0] == "model" and len(parts) >= 2 and parts[1] in PLUGIN_KEYS:
            problem = _check_plugin_override(key, parts, value, schema, plugins)
        if problem:
            return problem
        if parts[0] == "trainer" and len(parts) == 2 and parts[1] in DEVICE_KEYS:
            device[parts[1]] = (value, f"--{key}")
    if any(a in ("-h", "--help") or a.startswith("--print_config") for a in argv):
        return None  # printing the config or the help runs nothing, on no device
    return _accelerator_problem(device)
