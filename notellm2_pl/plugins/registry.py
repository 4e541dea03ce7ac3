"""Lazy plugin registry over Python entry points.

Nothing is scanned or imported at ``import notellm2_pl``. The first call to :func:`names`, :func:`get`,
:func:`resolve` or :func:`load_all` reads the entry points of the three groups (via ``importlib.metadata``),
checks for duplicate names, and imports plugin modules only when a plugin is asked for (or when the CLI calls
:func:`load_all` so that short class names resolve as ``class_path``).
"""

from __future__ import annotations

import difflib
import importlib.metadata as md
import logging
from functools import cache

from notellm2_pl.plugins.contract import Connector, LLMBackbone, PluginInfo, VisionEncoder

log = logging.getLogger(__name__)

GROUPS: dict[str, type] = {
    "notellm2_pl.llms": LLMBackbone,
    "notellm2_pl.vision_encoders": VisionEncoder,
    "notellm2_pl.connectors": Connector,
}
KIND_TO_GROUP = {"llm": "notellm2_pl.llms", "vision": "notellm2_pl.vision_encoders",
                 "connector": "notellm2_pl.connectors"}


class PluginError(LookupError):
    """Raised for unknown, duplicate or broken plugins; the message says what to do next."""


def _distribution_of(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "<unknown distribution>"


@cache
def _scan() -> dict[str, dict[str, tuple[md.EntryPoint, PluginInfo]]]:
    """Read all entry points of our groups once. Duplicate names within a group are an error."""
    table: dict[str, dict[str, tuple[md.EntryPoint, PluginInfo]]] = {g: {} for g in GROUPS}
    seen_values: set[tuple[str, str, str]] = set()
    for group in GROUPS:
        for ep in md.entry_points(group=group):
            key = (group, ep.name, ep.value)
            if key in seen_values:  # the same distribution visible twice on sys.path (e.g. editable + build dir)
                continue
            seen_values.add(key)
            info = PluginInfo(group=group, name=ep.name, value=ep.value, distribution=_distribution_of(ep))
            if ep.name in table[group]:
                other = table[group][ep.name][1]
                raise PluginError(
                    f"Duplicate plugin name {ep.name!r} in entry-point group {group!r}: registered by "
                    f"{other.distribution} ({other.value}) and by {info.distribution} ({info.value}). "
                    f"Uninstall one of them (pip uninstall <distribution>) or rename the entry point."
                )
            table[group][ep.name] = (ep, info)
    return table


def refresh() -> None:
    """Forget the cached scan (after installing a plugin into a running process, or in tests)."""
    _scan.cache_clear()
    get.cache_clear()


def _group(kind_or_group: str) -> str:
    group = KIND_TO_GROUP.get(kind_or_group, kind_or_group)
    if group not in GROUPS:
        raise PluginError(f"Unknown plugin kind {kind_or_group!r}; use one of {sorted(KIND_TO_GROUP)}.")
    return group


def names(kind: str) -> list[str]:
    """Sorted names of the plugins of one kind (``llm``, ``vision``, ``connector`` or a full group name)."""
    return sorted(_scan()[_group(kind)])


def infos() -> list[PluginInfo]:
    """Every registered plugin with its group, target and distribution."""
    return [info for group in GROUPS for _, (_, info) in sorted(_scan()[group].items())]


@cache
def get(kind: str, name: str) -> type:
    """Import and return the plugin class ``name`` of ``kind``.

    Raises:
        PluginError: the name is unknown (the message lists what exists and the closest match), the target does
            not import, or it does not derive from the kind's ABC.
    """
    group = _group(kind)
    table = _scan()[group]
    if name not in table:
        known = sorted(table)
        lower = {k.lower(): k for k in known}
        close = difflib.get_close_matches(name.lower(), list(lower), n=1)
        hint = f" Did you mean {lower[close[0]]!r}?" if close else ""
        raise PluginError(
            f"No plugin named {name!r} in {group!r}.{hint} Registered: {', '.join(known) or '(none)'}. "
            f"Run `python -m notellm2_pl list` to see every plugin and its distribution."
        )
    ep, info = table[name]
    try:
        cls = ep.load()
    except Exception as err:  # a plugin may fail in any way: report which one and why
        raise PluginError(f"Plugin {name!r} ({info.value}, from {info.distribution}) failed to import: "
                          f"{err!r}") from err
    base = GROUPS[group]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"Plugin {name!r} ({info.value}) is not a subclass of {base.__name__}.")
    return cls


def resolve(kind: str, name_or_path: str) -> type:
    """Resolve a short plugin name or a dotted ``module.Class`` path to a class."""
    if "." in name_or_path and name_or_path not in _scan()[_group(kind)]:
        module, _, attr = name_or_path.rpartition(".")
        return getattr(__import__(module, fromlist=[attr]), attr)
    return get(kind, name_or_path)


def load_all(strict: bool = False) -> dict[str, list[type]]:
    """Import every registered plugin (so jsonargparse can resolve short ``class_path`` names).

    Args:
        strict: Raise on a broken plugin instead of skipping it with a warning.
    """
    loaded: dict[str, list[type]] = {}
    for group in GROUPS:
        loaded[group] = []
        for name in names(group):
            try:
                loaded[group].append(get(group, name))
            except PluginError as err:
                if strict:
                    raise
                log.warning("Skipping broken plugin: %s", err)
    return loaded
