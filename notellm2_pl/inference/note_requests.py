"""Requests of the ``serve`` endpoints: their JSON shapes, and the checks that turn a request into notes or a 4xx.

Two layers, so a bad request never reaches the model or the index:

* **Shape and types** (:class:`EmbedRequest`, :class:`NeighboursRequest`, :class:`NotesRequest`): pydantic models,
  checked by FastAPI in the HTTP process before anything is queued. A missing field or a wrong type answers 422 with
  the field's location (``["body", "notes", 0, "title"]``).
* **Content** (:func:`decode_notes`): images are resolved (a server-side file path, base64 bytes or a ``data:`` URL),
  size-checked and fully decoded before the note is embedded; a failure raises :class:`RequestError` naming the
  field (``notes[0].image``) with its HTTP status (413 for oversized images, 422 otherwise).
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

from notellm2_pl.data.images import decode_image
from notellm2_pl.data.problems import DataError
from notellm2_pl.data.tables import Note

MAX_NOTES = 256
"""Notes per ``/embed`` or ``/notes`` request."""

NoteId = Annotated[StrictStr, Field(min_length=1, max_length=256)]


class NoteIn(BaseModel):
    """One note in a request. ``image`` is a file path on the server, base64 image bytes or a ``data:`` URL."""

    model_config = ConfigDict(extra="forbid")

    title: StrictStr
    topics: list[StrictStr] | StrictStr = Field(default_factory=list)
    content: StrictStr = ""
    image: StrictStr | None = None
    category: StrictStr | None = None
    note_id: NoteId | None = None


class StoredNote(NoteIn):
    """A note to add to the live index: ``note_id`` is required."""

    note_id: NoteId


class EmbedRequest(BaseModel):
    """``POST /embed``: ``{"notes": [note, ...]}``."""

    model_config = ConfigDict(extra="forbid")
    notes: list[NoteIn] = Field(min_length=1, max_length=MAX_NOTES)


class NotesRequest(BaseModel):
    """``POST /notes``: ``{"notes": [note with note_id, ...], "delete": [note_id, ...]}``.

    ``notes`` are inserted or replaced, ``delete`` ids removed (first), all in one request; ``missing_ok`` false
    answers 404 when a deleted id is not indexed (``DELETE /notes/{note_id}`` sends exactly that).
    """

    model_config = ConfigDict(extra="forbid")
    notes: list[StoredNote] = Field(default_factory=list, max_length=MAX_NOTES)
    delete: list[NoteId] = Field(default_factory=list, max_length=10_000)
    missing_ok: bool = True

    @model_validator(mode="after")
    def _check(self) -> NotesRequest:
        ids = [n.note_id for n in self.notes]
        if not ids and not self.delete:
            raise ValueError("give notes to add or note ids to delete")
        if len(set(ids)) != len(ids):
            raise ValueError("notes: duplicate note_id values in one request")
        if set(ids) & set(self.delete):
            raise ValueError("a note_id is both added and deleted in one request")
        return self


class NeighboursRequest(BaseModel):
    """``POST /neighbours``: by an indexed ``note_id`` or a new ``note``; ``k``, ``exclude`` and ``category``."""

    model_config = ConfigDict(extra="forbid")

    note_id: NoteId | None = None
    note: NoteIn | None = None
    k: StrictInt = Field(10, ge=1, le=1000)
    exclude: list[NoteId] = Field(default_factory=list, max_length=10_000)
    category: StrictStr | None = None

    @model_validator(mode="after")
    def _one_query(self) -> NeighboursRequest:
        if (self.note_id is None) == (self.note is None):
            raise ValueError("give exactly one of note_id (an indexed note) or note (a new note)")
        return self


class RequestError(ValueError):
    """A request the server refuses: ``status`` (4xx) and a message naming the field."""

    def __init__(self, status: int, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.status, self.field = status, field_name


@dataclass
class ImageLimits:
    """What an image in a request may be.

    Attributes:
        max_bytes: Largest encoded image.
        max_pixels: Largest width x height (decompression bombs are refused before decoding).
        root: When set, image paths are resolved under this folder and may not leave it.
        allow_paths: Whether images may be given as server-side file paths at all.
    """

    max_bytes: int = 10 * 2**20
    max_pixels: int = 40_000_000
    root: str | None = None
    allow_paths: bool = True


@dataclass
class DecodedNotes:
    """Notes ready for :meth:`~notellm2_pl.inference.embedder.Embedder.embed`, and the spooled image files to
    delete once they are embedded."""

    notes: list[Note]
    categories: list[str | None]
    spooled: list[str] = field(default_factory=list)

    def cleanup(self) -> None:
        """Delete the spooled image files."""
        for path in self.spooled:
            Path(path).unlink(missing_ok=True)
        self.spooled.clear()


def _base64_bytes(value: str) -> bytes | None:
    """The bytes of base64 text or a ``data:...;base64,`` URL; None when it is neither."""
    text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _check_decodes(path: str, where: str, limits: ImageLimits) -> None:
    """Refuse an image that is too large (pixels, header only) or does not decode fully to RGB."""
    try:
        with Image.open(path) as img:
            w, h = img.size
    except Exception as err:  # decoders raise many exception types on hostile bytes
        raise RequestError(422, where, f"not a decodable image ({type(err).__name__}: {err})") from err
    if w * h > limits.max_pixels:
        raise RequestError(413, where, f"{w}x{h} pixels exceeds the limit of {limits.max_pixels}")
    try:
        decode_image(path)
    except DataError as err:
        raise RequestError(422, where, f"not a decodable image ({err.code})") from err


def _resolve_path(value: str, where: str, limits: ImageLimits) -> str | None:
    """The server-side file an image value names, or None when it names no file."""
    if not limits.allow_paths or len(value) > 4096 or "\0" in value:
        return None
    path = Path(limits.root, value) if limits.root else Path(value)
    if limits.root and not path.resolve().is_relative_to(Path(limits.root).resolve()):
        raise RequestError(422, where, f"image path {value!r} leaves the image root")
    return str(path) if path.is_file() else None


def resolve_image(value: str, where: str, limits: ImageLimits, spool: str) -> tuple[str, bool]:
    """Resolve an image value to a checked image file.

    Args:
        value: A file path, base64 bytes or a ``data:`` URL.
        where: The field, for messages (``notes[0].image``).
        limits: What an image may be.
        spool: Folder for decoded base64 images.

    Returns:
        ``(path, spooled)``: the image file, and whether it is a spooled copy to delete after use.

    Raises:
        RequestError: 422 (neither file nor base64, or undecodable) or 413 (too large).
    """
    path = _resolve_path(value, where, limits)
    if path is not None:
        if os.path.getsize(path) > limits.max_bytes:
            raise RequestError(413, where, f"image file exceeds {limits.max_bytes} bytes")
        _check_decodes(path, where, limits)
        return path, False
    data = _base64_bytes(value)
    if not data:
        raise RequestError(422, where, "neither an existing image file" + (" (paths are disabled)" if not
                           limits.allow_paths else "") + " nor base64 image bytes")
    if len(data) > limits.max_bytes:
        raise RequestError(413, where, f"image of {len(data)} bytes exceeds {limits.max_bytes} bytes")
    fd, spooled = tempfile.mkstemp(dir=spool, suffix=".img")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    try:
        _check_decodes(spooled, where, limits)
    except RequestError:
        os.unlink(spooled)
        raise
    return spooled, True


def decode_notes(notes: list[NoteIn], limits: ImageLimits, spool: str, needs_image: bool,
                 field_name: str = "notes") -> DecodedNotes:
    """Check the content of request notes and turn them into :class:`Note` objects.

    Args:
        notes: The validated request notes.
        limits: What an image may be.
        spool: Folder for decoded base64 images.
        needs_image: Whether the model needs an image per note.
        field_name: The request field holding the notes, for messages (``note`` for a single note).

    Returns:
        The notes; call :meth:`DecodedNotes.cleanup` once they are embedded.

    Raises:
        RequestError: Naming the first bad field.
    """
    out = DecodedNotes([], [])
    try:
        for i, n in enumerate(notes):
            where = f"{field_name}[{i}]" if field_name == "notes" else field_name
            image = None
            if n.image:
                image, spooled = resolve_image(n.image, f"{where}.image", limits, spool)
                if spooled:
                    out.spooled.append(image)
            elif needs_image:
                raise RequestError(422, f"{where}.image", "this model needs an image for every note")
            topics = [t for t in n.topics.split("|") if t] if isinstance(n.topics, str) else list(n.topics)
            out.notes.append(Note(note_id=n.note_id or f"request{i}", title=n.title, topics=topics,
                                  content=n.content, image=image))
            out.categories.append(n.category)
    except RequestError:
        out.cleanup()
        raise
    return out
