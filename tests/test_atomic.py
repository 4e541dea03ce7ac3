"""Issue 7: crash-safe outputs (notellm2_pl.atomic): a destination is absent, the old version, or complete."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from notellm2_pl.atomic import (
    atomic_dir,
    atomic_open,
    atomic_save,
    atomic_write_bytes,
    atomic_write_text,
    cleanup_leftovers,
)


class Boom(RuntimeError):
    pass


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_atomic_file_write_and_replace(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "emb.bin"
    atomic_write_bytes(dest, b"one")
    assert dest.read_bytes() == b"one"
    os.chmod(dest, 0o640)
    atomic_write_text(dest, "två")
    assert dest.read_text(encoding="utf-8") == "två"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640  # permissions of the replaced file kept
    assert _siblings(dest) == ["emb.bin"]


def test_atomic_file_failure_keeps_old_version(tmp_path: Path) -> None:
    dest = tmp_path / "ids.json"
    atomic_write_text(dest, "old")
    with pytest.raises(Boom), atomic_open(dest, "w") as f:
        f.write("half of the new")
        raise Boom
    assert dest.read_text() == "old" and _siblings(dest) == ["ids.json"]
    with pytest.raises(Boom), atomic_open(tmp_path / "new.bin") as f:
        f.write(b"x")
        raise Boom
    assert not (tmp_path / "new.bin").exists() and _siblings(dest) == ["ids.json"]


def test_atomic_save_torch_weights_only_loadable(tmp_path: Path) -> None:
    import torch

    atomic_save({"w": torch.arange(3)}, tmp_path / "t.pt")
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["w"], torch.arange(3))


def test_atomic_dir_complete_or_absent(tmp_path: Path) -> None:
    dest = tmp_path / "index"
    with pytest.raises(Boom), atomic_dir(dest) as tmp:
        (tmp / "a.bin").write_bytes(b"a")
        raise Boom
    assert not dest.exists() and _siblings(dest) == []
    with atomic_dir(dest) as tmp:
        assert not dest.exists()  # nothing visible until the block ends
        (tmp / "a.bin").write_bytes(b"a")
        (tmp / "nested").mkdir()
        (tmp / "nested" / "b.txt").write_text("b")
    assert (dest / "nested" / "b.txt").read_text() == "b" and _siblings(dest) == ["index"]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o777 & ~_umask()


def test_atomic_dir_replace_and_failure_keeps_old(tmp_path: Path) -> None:
    dest = tmp_path / "export"
    with atomic_dir(dest) as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(Boom), atomic_dir(dest) as tmp:
        (tmp / "v").write_text("2-partial")
        raise Boom
    assert (dest / "v").read_text() == "1" and _siblings(dest) == ["export"]
    with atomic_dir(dest) as tmp:
        (tmp / "v").write_text("2")
        (tmp / "w").write_text("new file")
    assert sorted(p.name for p in dest.iterdir()) == ["v", "w"] and (dest / "v").read_text() == "2"
    assert _siblings(dest) == ["export"]
    with pytest.raises(FileExistsError, match="overwrite=True"), atomic_dir(dest, overwrite=False):
        pass


def test_cleanup_leftovers_of_a_killed_writer(tmp_path: Path) -> None:
    dest = tmp_path / "index"
    (tmp_path / ".tmp-index.abc").mkdir()
    (tmp_path / ".tmp-index.abc" / "half").write_bytes(b"x")
    (tmp_path / ".tmp-index.other").write_bytes(b"x")
    (tmp_path / ".tmp-other.abc").mkdir()
    removed = cleanup_leftovers(dest)
    assert len(removed) == 2 and _siblings(dest) == [".tmp-other.abc"]


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
