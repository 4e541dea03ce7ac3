"""The prepared streaming layout: dataset names, the manifest, and notes as litdata items (and back).

Every folder under the prepared root is one litdata optimized dataset; ``streaming.json`` says what was prepared.
Paths and URLs are joined with ``/`` so the same code serves a local folder and ``s3://bucket/prefix``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from notellm2_pl.atomic import atomic_write_text
from notellm2_pl.data.problems import DataError
from notellm2_pl.data.schema import ALL_PAIRS
from notellm2_pl.data.tables import Note

FORMAT = 1
"""Version of the prepared layout; a reader refuses another one."""

MANIFEST = "streaming.json"

NOTE_SPLITS = {"train": "train", "val": "train", "test": "test"}
"""Split -> the notes dataset its pool comes from (val pairs are over the train notes)."""


def is_url(path: str) -> bool:
    """Whether ``path`` is an object-store URL (``s3://``, ``gs://``, ...) rather than a local folder."""
    return "://" in str(path)


def join(root: str, name: str) -> str:
    """``root/name`` for a folder or a URL."""
    return f"{str(root).rstrip('/')}/{name}"


def notes_dir(root: str, note_split: str) -> str:
    """Notes of ``train`` or ``test``, one item per note, sorted by note id."""
    return join(root, f"notes_{note_split}")


def ids_dir(root: str, note_split: str) -> str:
    """Note id and raw text length of every note of ``notes_dir``, same order."""
    return join(root, f"ids_{note_split}")


def train_pairs_dir(root: str) -> str:
    """Training pairs, each with both notes whole."""
    return join(root, "train_pairs")


def pairs_dir(root: str, split: str, subset: str = ALL_PAIRS) -> str:
    """Id pairs of ``val`` or ``test`` (``subset``: ``all`` or one of the test subsets)."""
    return join(root, f"pairs_{split}" if subset == ALL_PAIRS else f"pairs_{split}_{subset}")


# ----------------------------------------------------------------------------------------------------- manifest
def write_manifest(root: str, manifest: dict[str, Any]) -> None:
    """Write ``streaming.json`` (atomically for a folder; through fsspec for a URL)."""
    text = json.dumps(manifest, indent=2, sort_keys=True)
    if not is_url(root):
        atomic_write_text(Path(root) / MANIFEST, text)
        return
    import fsspec  # optional: object stores only (s3 needs s3fs)

    with fsspec.open(join(root, MANIFEST), "w") as f:
        f.write(text)


def read_manifest(root: str) -> dict[str, Any]:
    """Read and check ``streaming.json`` of a prepared root.

    Raises:
        DataError: no manifest (not prepared) or another format version.
    """
    try:
        if is_url(root):
            import fsspec  # optional: object stores only (s3 needs s3fs)

            with fsspec.open(join(root, MANIFEST), "r") as f:
                manifest = json.load(f)
        else:
            manifest = json.loads((Path(root) / MANIFEST).read_text())
    except FileNotFoundError as err:
        raise DataError(f"{root} holds no prepared streaming data ({MANIFEST} missing). Write it with "
                        f"`python -m notellm2_pl prepare DATA_ROOT {root}`.") from err
    if manifest.get("format") != FORMAT:
        raise DataError(f"{join(root, MANIFEST)} has format {manifest.get('format')!r}; this version reads format "
                        f"{FORMAT}. Prepare the data again.")
    return manifest


# -------------------------------------------------------------------------------------------------------- items
# Text is stored as UTF-8 bytes, never as ``str`` leaves: litdata's string serializer stores any string that names an
# existing file as that file's content (a title or id equal to a file name in the working directory would be read).
def text_leaf(text: str) -> bytes:
    """A string as an item leaf (UTF-8 bytes)."""
    return text.encode("utf-8")


def read_text(leaf: bytes | memoryview) -> str:
    """Inverse of :func:`text_leaf`."""
    return bytes(leaf).decode("utf-8")


def note_record(note: Note) -> tuple[str, str, list[str], str, str]:
    """What a prepare worker needs to build a note's item (picklable, without the image bytes yet)."""
    return note.note_id, note.title, list(note.topics), note.content, note.image or ""


def note_item(record: tuple[str, str, list[str], str, str]) -> dict[str, Any]:
    """A note as a litdata item: its text fields (JSON) and its image file's raw bytes (read here)."""
    note_id, image = record[0], record[4]
    data = b""
    if image:
        try:
            data = Path(image).read_bytes()
        except OSError as err:
            raise DataError(f"Cannot read the image of note {note_id}: {image} ({err}).", code="missing_image",
                            where=image) from err
    return {"fields": text_leaf(json.dumps(list(record), ensure_ascii=False)), "image": data}


def note_from_item(item: dict[str, Any]) -> Note:
    """Inverse of :func:`note_item`: the note, its image bytes in ``image_bytes`` (decoded by the processor)."""
    note_id, title, topics, content, image = json.loads(read_text(item["fields"]))
    return Note(note_id, title, topics, content, image or None, image_bytes=bytes(item["image"]) if image else None)
