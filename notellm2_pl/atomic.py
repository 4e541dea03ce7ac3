"""Crash-safe outputs: a file or directory is either absent, the old version, or complete; never half written.

* :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_open`: write to a temp file in the
  destination's folder, fsync, then ``os.replace`` (atomic on POSIX and Windows within one file system).
* :func:`atomic_dir`: build a directory under a temp name beside the destination, then rename it into place. An
  existing destination is moved aside first and removed only after the new one is in place; a reader that sees
  ``dest`` sees a complete directory. Leftover ``.tmp-*`` / ``.old-*`` siblings of an interrupted run are never
  loaded (their names differ); :func:`cleanup_leftovers` removes them.

Usage::

    with atomic_open("emb.npy", "wb") as f:
        np.save(f, emb)
    with atomic_dir("index/") as tmp:
        faiss.write_index(index, str(tmp / "index.faiss"))
        atomic_write_text(tmp / "ids.json", json.dumps(ids))
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", encoding: str | None = None, fsync: bool = True) -> Iterator[IO]:
    """Open a temp file beside ``path`` for writing; on success it replaces ``path`` atomically.

    On an exception inside the block the temp file is removed and ``path`` is untouched.

    Args:
        path: Destination file.
        mode: ``wb`` or ``w`` (text; ``encoding`` defaults to UTF-8).
        encoding: Text encoding for ``mode="w"``.
        fsync: Flush the file (and its folder) to disk before and after the rename.

    Yields:
        The open temp file.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports mode 'w' or 'wb', not {mode!r}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if mode == "w" else None) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        _copy_mode(path, tmp)
        os.replace(tmp, path)
        if fsync:
            _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _copy_mode(dest: Path, tmp: str) -> None:
    """Keep an existing file's permissions; new files get the usual umask-based mode (mkstemp uses 0600)."""
    try:
        os.chmod(tmp, dest.stat().st_mode & 0o7777)
    except FileNotFoundError:
        os.chmod(tmp, 0o666 & ~_umask())


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb", fsync=fsync) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8", fsync: bool = True) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w", encoding=encoding, fsync=fsync) as f:
        f.write(text)


def atomic_save(obj: Any, path: str | Path, saver: Any = None) -> None:
    """``torch.save`` (or ``saver(obj, file)``) into ``path`` atomically."""
    if saver is None:
        import torch

        saver = torch.save
    with atomic_open(path, "wb") as f:
        saver(obj, f)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def cleanup_leftovers(path: str | Path) -> list[Path]:
    """Remove the ``.tmp-*`` / ``.old-*`` siblings that a killed writer of ``path`` left behind.

    Only call it when no other process is writing ``path``. Returns the removed paths.
    """
    dest = Path(path)
    removed = []
    for pattern in (f".tmp-{dest.name}.*", f".old-{dest.name}.*"):
        for p in dest.parent.glob(pattern):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = True, fsync: bool = True) -> Iterator[Path]:
    """Build a directory under a temp name, then move it to ``path`` in one rename.

    On an exception inside the block the temp directory is removed and ``path`` is untouched.

    Args:
        path: Destination directory.
        overwrite: Replace an existing ``path`` (moved aside, then removed once the new one is in place). If
            false and ``path`` exists, raise ``FileExistsError`` before anything is written.
        fsync: fsync the files written and the parent folder.

    Yields:
        The temp directory to fill.
    """
    dest = Path(path)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} exists; pass overwrite=True or choose another output path.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}.", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; the result should look like a normal mkdir
    try:
        yield tmp
        if fsync:
            for f in tmp.rglob("*"):
                if f.is_file():
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
        old = None
        if dest.exists():
            if not overwrite:
                raise FileExistsError(f"{dest} appeared while writing; not replaced (the new files were dropped).")
            old = Path(tempfile.mkdtemp(prefix=f".old-{dest.name}.", dir=dest.parent))
            os.replace(dest, old / dest.name)
        try:
            os.replace(tmp, dest)
        except BaseException:
            if old is not None:  # put the previous version back
                os.replace(old / dest.name, dest)
            raise
        if fsync:
            _fsync_dir(dest.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
