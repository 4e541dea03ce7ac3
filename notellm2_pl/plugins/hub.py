"""Fail fast, and say what to do, when a plugin's pretrained weights cannot be had.

A recipe names weights by hub id (``Qwen/Qwen2.5-0.5B``) or local path. On a machine without network and without
the weights in the Hugging Face cache, transformers retries for about a minute and then ends in a stack trace. Plugins
call :func:`ensure_available` before loading instead: a local path or a cached id passes at once; an id that is
neither cached nor downloadable raises :class:`WeightsUnavailable` within seconds, naming the id, the reason and the
two ways out (download it, or point the recipe at a local copy).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
PROBE_TIMEOUT_S = 3.0


class WeightsUnavailable(OSError):
    """Pretrained weights are neither local, nor cached, nor downloadable now. The message says what to do."""


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES)


def _cached(repo_id: str, filenames: tuple[str, ...], revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        try:
            hit = try_to_load_from_cache(repo_id, name, revision=revision)
        except ValueError:  # not a valid repo id: let the loader produce its own error
            return True
        if isinstance(hit, str):
            return True
    return False


def _unreachable(timeout: float) -> str | None:
    """Why the hub cannot be reached (None when a TCP connection opens within ``timeout`` seconds)."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return None
    except OSError as err:
        return f"{url.geturl()} is unreachable ({err.__class__.__name__}: {err})"


def ensure_available(source: str, flag: str, revision: str | None = None,
                     filenames: tuple[str, ...] = ("config.json",), timeout: float = PROBE_TIMEOUT_S) -> None:
    """Return when ``source`` can be loaded; raise :class:`WeightsUnavailable` at once when it cannot.

    Args:
        source: A local directory/file, or a hub id.
        flag: The recipe key that sets ``source``, for the message (e.g. ``--model.llm.init_args.pretrained``).
        revision: Hub revision the loader will ask for.
        filenames: Files whose presence in the cache means the weights were downloaded before.
        timeout: Seconds to wait for a connection to the hub before giving up.

    Raises:
        WeightsUnavailable: Not local, not cached, and offline mode is on or the hub does not answer.
    """
    if Path(source).expanduser().exists() or _cached(source, filenames, revision):
        return
    reason = ("offline mode is on (" + ", ".join(v for v in OFFLINE_VARIABLES if os.environ.get(v)) + ")"
              if _offline() else _unreachable(timeout))
    if reason is None:
        return
    raise WeightsUnavailable(
        f"Cannot load {source!r}: it is not a local path, not in the Hugging Face cache, and {reason}.\n"
        f"Either download it where there is network and copy the cache here:\n"
        f"    huggingface-cli download {source}" + (f" --revision {revision}" if revision else "") + "\n"
        f"or point the recipe at a local copy:\n"
        f"    {flag} /path/to/{source.rstrip('/').rsplit('/', 1)[-1]}"
    )
