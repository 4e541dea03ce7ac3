"""Config errors in the user's words: checked before LightningCLI parses, with "did you mean" and what to type.

jsonargparse's own messages for the two most common mistakes are hard to act on: an unknown plugin name gives
"Expected a dot import path string: HFCausalLMX", and a key typo gives "Group 'model' does not accept option
'mcl'". :func:`preflight` looks at the ``--config`` files and the command-line overrides first and, for those two
mistakes only, returns a message naming the file or flag, the closest valid name and the command that lists the
valid ones. Anything it does not understand is left to jsonargparse.
"""

from __future__ import annotations

import difflib
import inspect
import re
from pathlib import Path
from typing import Any

PLUGIN_KEYS = {"llm": "llm", "vision": "vision", "connector": "connector"}
TOP_KEYS = {"seed_everything", "trainer", "model", "data", "optimizer", "lr_scheduler", "ckpt_path", "config",
            "print_config", "weights_only", "return_predictions"}


def _params(obj: Any) -> set[str]:
    try:
        return {p for p in inspect.signature(obj).parameters if p not in ("self", "args", "kwargs")}
    except (TypeError, ValueError):
        return set()


def _did_you_mean(name: str, options: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(options), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def _known_groups() -> dict[str, set[str]]:
    import lightning as L

    from notellm2_pl.data.datamodule import NoteDataModule
    from notellm2_pl.training.module import NoteLLM2Module

    return {"model": _params(NoteLLM2Module.__init__), "data": _params(NoteDataModule.__init__),
            "trainer": _params(L.Trainer.__init__)}


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


def _plugin_problem(kind: str, name: Any, where: str) -> str | None:
    from notellm2_pl import registry

    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_]\w*", name) or name.lower() in ("null", "none"):
        return None  # dotted paths, JSON/YAML values and files are left to jsonargparse
    if name in registry.names(kind):
        return None
    try:
        registry.get(kind, name)
    except registry.PluginError as err:
        return f"{where}: {err}"
    return None


def _check_tree(cfg: dict, where: str, groups: dict[str, set[str]]) -> str | None:
    for top, value in cfg.items():
        if top not in TOP_KEYS:
            return f"{where}: unknown top-level key {top!r}.{_did_you_mean(top, TOP_KEYS)}"
        if top not in groups or not isinstance(value, dict):
            continue
        for key, sub in value.items():
            if key not in groups[top]:
                return (f"{where}: {top} has no option {key!r}.{_did_you_mean(key, groups[top])} "
                        f"`python -m notellm2_pl fit --help` lists every option.")
            if top == "model" and key in PLUGIN_KEYS:
                name = sub.get("class_path") if isinstance(sub, dict) else sub
                problem = _plugin_problem(PLUGIN_KEYS[key], name, f"{where}: model.{key}")
                if problem:
                    return problem
                init = sub.get("init_args") if isinstance(sub, dict) else None
                if isinstance(init, dict) and isinstance(name, str):
                    problem = _init_args_problem(key, name, init, where)
                    if problem:
                        return problem
    return None


def _init_args_problem(kind: str, name: str, init: dict, where: str) -> str | None:
    from notellm2_pl import registry

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


def preflight(argv: list[str]) -> str | None:
    """Check plugin names and option keys of ``--config`` files and overrides; return a message, or None if fine.

    Args:
        argv: The arguments after the subcommand (``fit``, ...).
    """
    import yaml

    configs, overrides = _split_argv(argv)
    groups = _known_groups()
    plugins: dict[str, str] = {}  # kind -> plugin name in effect (configs, then overrides)
    for path in configs:
        if not Path(path).is_file():
            return f"Config file {path} not found. Recipes live in recipes/ (e.g. --config recipes/demo.yaml)."
        try:
            cfg = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as err:
            return f"{path} is not valid YAML: {err}"
        if isinstance(cfg, dict):
            for kind, sub in (cfg.get("model") or {}).items() if isinstance(cfg.get("model"), dict) else []:
                name = sub.get("class_path") if isinstance(sub, dict) else sub
                if kind in PLUGIN_KEYS and isinstance(name, str):
                    plugins[kind] = name
            problem = _check_tree(cfg, path, groups)
            if problem:
                return problem
    for key, value in overrides:
        parts = key.split(".")
        top = parts[0]
        if top in groups and len(parts) >= 2 and parts[1] not in groups[top]:
            prefixed = [k for k in groups[top] if k.startswith(parts[1])]
            if len(prefixed) != 1:  # argparse accepts unique prefixes
                return (f"--{key}: {top} has no option {parts[1]!r}.{_did_you_mean(parts[1], groups[top])} "
                        f"`python -m notellm2_pl fit --help` lists every option.")
        if top == "model" and len(parts) == 2 and parts[1] in PLUGIN_KEYS and isinstance(value, str) \
                and value.lstrip().startswith("{"):
            try:
                sub = yaml.safe_load(value)
            except yaml.YAMLError:
                sub = None
            if isinstance(sub, dict):
                problem = _check_tree({"model": {parts[1]: sub}}, f"--{key}", groups)
                if problem:
                    return problem
                value = sub.get("class_path")
        if top == "model" and len(parts) >= 2 and parts[1] in PLUGIN_KEYS and \
                (len(parts) == 2 or parts[2] == "class_path"):
            problem = _plugin_problem(PLUGIN_KEYS[parts[1]], value, f"--{key}")
            if problem:
                return problem
            if isinstance(value, str):
                plugins[parts[1]] = value
        if top == "model" and len(parts) == 4 and parts[1] in plugins and parts[2] == "init_args":
            problem = _init_args_problem(parts[1], plugins[parts[1]], {parts[3]: value}, f"--{key}")
            if problem:
                return problem
    return None
