"""The ``serve`` endpoints as LitServe APIs: embed notes, find neighbours, and write the live index.

Three :class:`litserve.LitAPI` classes share one port (LitServe's multiple-endpoints feature: one API per route,
each with its own queue and worker processes, every worker loading the model once in ``setup``):

* :class:`EmbedAPI` on ``POST /embed``: dynamic batching across concurrent requests (``max_batch_size``,
  ``batch_timeout``); the notes of all requests in a batch go through one :meth:`Embedder.embed
  <notellm2_pl.inference.embedder.Embedder.embed>` call, so the vectors equal the offline ones.
* :class:`NeighboursAPI` on ``POST /neighbours``: top-k of an indexed note (its stored vector) or of a new note
  (embedded), with ``exclude`` and ``category`` filters, from the live index
  (:class:`~notellm2_pl.retrieval.live_index.LiveIndex`).
* :class:`NotesAPI` on ``POST /notes`` (and ``DELETE /notes/{note_id}``, routed to the same queue by
  :mod:`notellm2_pl.inference.serving_http`): one worker, the single writer of the index. Notes are checked and
  embedded before the upsert, so a failed request writes nothing; the reply comes after the commit.

Request checks are :mod:`notellm2_pl.inference.note_requests`; a batched request that fails them answers its own 4xx
without failing the other requests of its batch. The server is assembled by :func:`build_server`.

Annotations here are evaluated (no ``from __future__ import annotations``): LitServe reads the class of
``decode_request``'s ``request`` parameter to declare the route's JSON body, which FastAPI then validates.
"""

import atexit
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

import litserve as ls
import numpy as np
import torch
from fastapi import HTTPException
from fastapi.responses import JSONResponse, Response

from notellm2_pl.inference.embedder import Embedder
from notellm2_pl.inference.export import read_export_config
from notellm2_pl.inference.note_requests import (
    DecodedNotes,
    EmbedRequest,
    ImageLimits,
    NeighboursRequest,
    NotesRequest,
    RequestError,
    decode_notes,
)
from notellm2_pl.inference.serving_http import add_routes
from notellm2_pl.retrieval.live_index import LiveIndex

log = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    """Settings of a ``serve`` process (the command's flags).

    Attributes:
        model: Export directory.
        index: Live index directory or URI.
        device: ``cpu``, ``cuda``, ``mps`` or ``auto``.
        devices: Accelerators to use (``auto``: all).
        workers: Worker processes per device for ``/embed`` and ``/neighbours`` (``/notes`` has one writer).
        max_batch_size: Most ``/embed`` requests batched into one forward pass.
        batch_timeout: Seconds ``/embed`` waits to fill a batch.
        max_payload_mb: Largest request body.
        images: What an image in a request may be.
        nprobes: IVF partitions visited per search (``ivf`` live indexes).
        optimize_every: Writes between compactions of the live index (0: never).
        threads: Torch CPU threads per worker (None: torch's default).
        storage_options: Object-store options of the index URI (credentials, region, endpoint).
        timeout: Seconds a request may wait in a queue before it answers 504.
    """

    model: str
    index: str
    device: str = "auto"
    devices: int | str = "auto"
    workers: int = 1
    max_batch_size: int = 16
    batch_timeout: float = 0.005
    max_payload_mb: float = 16.0
    images: ImageLimits = field(default_factory=ImageLimits)
    nprobes: int | None = None
    optimize_every: int = 1000
    threads: int | None = None
    storage_options: dict[str, str] | None = None
    timeout: float = 30.0


def _error(err: RequestError) -> JSONResponse:
    return JSONResponse({"detail": str(err), "field": err.field}, status_code=err.status)


def _http_error(err: RequestError) -> HTTPException:
    return HTTPException(err.status, detail=str(err))


class _ModelAPI(ls.LitAPI):
    """Shared setup: the embedder on the worker's device, a spool folder for request images, the live index."""

    def __init__(self, cfg: ServeConfig, api_path: str, open_index: bool = True, **kwargs: Any) -> None:
        super().__init__(api_path=api_path, **kwargs)
        self.cfg, self.open_index = cfg, open_index

    def setup(self, device: str) -> None:
        """Load the model (and open the live index) in this worker process."""
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        self.embedder = Embedder.from_pretrained(self.cfg.model, device=device)
        self.needs_image = self.embedder.module.note_format().image_config is not None
        self.spool = tempfile.mkdtemp(prefix="notellm2-serve-")  # request images decoded from base64
        atexit.register(shutil.rmtree, self.spool, True)
        self.index = LiveIndex.open(self.cfg.index, self.cfg.storage_options) if self.open_index else None
        self.key = self.index.key if self.index is not None else self.embedder.keys[0]

    def embed(self, decoded: DecodedNotes) -> np.ndarray:
        """(N, d) embeddings of checked notes (the index's key); spooled images are deleted afterwards."""
        try:
            return self.embedder.embed(decoded.notes, batch_size=max(1, len(decoded.notes)), progress=False,
                                       key=self.key)
        finally:
            decoded.cleanup()


class EmbedAPI(_ModelAPI):
    """``POST /embed``: ``{"notes": [...]}`` -> ``{"key", "dim", "vectors": [[...], ...]}``, batched."""

    def __init__(self, cfg: ServeConfig) -> None:
        super().__init__(cfg, "/embed", open_index=False, max_batch_size=cfg.max_batch_size,
                         batch_timeout=cfg.batch_timeout)

    def setup(self, device: str) -> None:
        """Load the model; the embedding key is the index's (read once, the index itself is not needed)."""
        super().setup(device)
        self.key = LiveIndex.open(self.cfg.index, self.cfg.storage_options).key

    def decode_request(self, request: EmbedRequest) -> DecodedNotes | RequestError:
        """Checked notes, or the error (returned, not raised: a raise would fail the whole batch)."""
        try:
            return decode_notes(request.notes, self.cfg.images, self.spool, self.needs_image)
        except RequestError as err:
            return err

    def batch(self, inputs: list[DecodedNotes | RequestError]) -> list[DecodedNotes | RequestError]:
        """The requests of a batch, as they are (:meth:`predict` embeds their notes together)."""
        return inputs

    def predict(self, x: list[DecodedNotes | RequestError]) -> list[np.ndarray | RequestError]:
        """Embed the notes of every valid request of the batch in one call; errors pass through."""
        good = [d for d in x if isinstance(d, DecodedNotes)]
        merged = DecodedNotes([n for d in good for n in d.notes], [], [p for d in good for p in d.spooled])
        vectors = self.embed(merged) if merged.notes else np.zeros((0, 0), np.float32)
        out: list[np.ndarray | RequestError] = []
        start = 0
        for d in x:
            if isinstance(d, RequestError):
                out.append(d)
            else:
                out.append(vectors[start: start + len(d.notes)])
                start += len(d.notes)
        return out

    def unbatch(self, output: list[np.ndarray | RequestError]) -> list[np.ndarray | RequestError]:
        """One output per request."""
        return output

    def encode_response(self, output: np.ndarray | RequestError) -> Response:
        """The vectors, or the request's 4xx."""
        if isinstance(output, RequestError):
            return _error(output)
        return JSONResponse({"key": self.key, "dim": int(output.shape[1]), "vectors": output.tolist()})


class NeighboursAPI(_ModelAPI):
    """``POST /neighbours``: top-k of an indexed note or of a new note, with filters."""

    def __init__(self, cfg: ServeConfig) -> None:
        super().__init__(cfg, "/neighbours")

    def decode_request(self, request: NeighboursRequest) -> tuple[NeighboursRequest, DecodedNotes | None]:
        """The request and, for a new note, the checked note (a bad one answers its 4xx)."""
        if request.note is None:
            return request, None
        try:
            return request, decode_notes([request.note], self.cfg.images, self.spool, self.needs_image, "note")
        except RequestError as err:
            raise _http_error(err) from err

    def predict(self, x: tuple[NeighboursRequest, DecodedNotes | None]) -> dict[str, Any]:
        """The query and its neighbours; an unknown ``note_id`` answers 404."""
        req, decoded = x
        if decoded is not None:
            query, own = self.embed(decoded)[0], None
            described = {"note_id": None, "title": req.note.title}
        else:
            stored = self.index.fetch([req.note_id]).get(req.note_id)
            if stored is None:
                raise HTTPException(404, detail=f"note_id: {req.note_id!r} is not in the live index")
            query, own = stored["vector"], req.note_id
            described = {"note_id": own, "title": stored["title"], "category": stored["category"]}
        exclude = list(dict.fromkeys(([own] if own else []) + list(req.exclude)))
        hits = self.index.search(query, req.k, exclude=exclude, category=req.category, nprobes=self.cfg.nprobes)
        return {"query": described, "neighbours": hits}

    def encode_response(self, output: dict[str, Any]) -> Response:
        """The JSON reply."""
        return JSONResponse(output)


class NotesAPI(_ModelAPI):
    """``POST /notes`` (upsert and delete) and ``DELETE /notes/{note_id}``: the single writer of the live index."""

    def __init__(self, cfg: ServeConfig) -> None:
        super().__init__(cfg, "/notes")
        self.writes = 0

    def decode_request(self, request: NotesRequest) -> tuple[NotesRequest, DecodedNotes | None]:
        """The request and its checked notes (a bad one answers its 4xx before anything is written)."""
        if not request.notes:
            return request, None
        try:
            return request, decode_notes(request.notes, self.cfg.images, self.spool, self.needs_image)
        except RequestError as err:
            raise _http_error(err) from err

    def predict(self, x: tuple[NotesRequest, DecodedNotes | None]) -> dict[str, Any]:
        """Embed, then delete and upsert (one commit each); the reply comes after the commits (durable)."""
        req, decoded = x
        vectors = self.embed(decoded) if decoded is not None else None  # before any write: a failure writes nothing
        out: dict[str, Any] = {"inserted": 0, "updated": 0, "deleted": 0, "not_found": []}
        if req.delete:
            known = set(self.index.fetch(req.delete))
            out["not_found"] = [i for i in req.delete if i not in known]
            if out["not_found"] and not req.missing_ok:
                raise HTTPException(404, detail=f"note_id: {out['not_found'][0]!r} is not in the live index")
            out["deleted"] = self.index.delete(sorted(known))
        if decoded is not None:
            out.update(self.index.upsert([n.note_id for n in decoded.notes], vectors,
                                         [n.title for n in decoded.notes], decoded.categories))
        self._maybe_optimize()
        out["rows"] = len(self.index)
        return out

    def _maybe_optimize(self) -> None:
        self.writes += 1
        if self.cfg.optimize_every and self.writes % self.cfg.optimize_every == 0:
            self.index.optimize()

    def encode_response(self, output: dict[str, Any]) -> Response:
        """The JSON reply."""
        return JSONResponse(output)


def check_model_and_index(cfg: ServeConfig) -> dict[str, Any]:
    """Check that the export and the live index exist and agree on the embedding dimension.

    Returns:
        ``{"model", "index", "key", "dim", "rows"}`` (the server's ``/info`` metadata).

    Raises:
        FileNotFoundError: If either is missing.
        ValueError: If the model's embeddings and the index's vectors have different dimensions.
    """
    export = read_export_config(cfg.model)
    index = LiveIndex.open(cfg.index, cfg.storage_options)
    dim = (export.get("model", {}).get("encoder") or {}).get("embed_dim")
    if dim is not None and int(dim) != index.dim:
        raise ValueError(f"The model's embeddings have dim {dim} but the live index {cfg.index} has dim {index.dim}: "
                         f"index the embeddings of this model.")
    return {"model": str(cfg.model), "index": str(cfg.index), "key": index.key, "dim": index.dim, "rows": len(index)}


def build_server(cfg: ServeConfig) -> ls.LitServer:
    """The LitServer of ``serve``: the three APIs, the guard/metrics middleware and the extra routes.

    Raises:
        FileNotFoundError, ValueError: As :func:`check_model_and_index`.
    """
    info = check_model_and_index(cfg)
    apis = [EmbedAPI(cfg), NeighboursAPI(cfg), NotesAPI(cfg)]
    server = ls.LitServer(apis, accelerator=cfg.device, devices=cfg.devices, timeout=cfg.timeout,
                          workers_per_device={"/embed": cfg.workers, "/neighbours": cfg.workers, "/notes": 1},
                          model_metadata=json.loads(json.dumps(info)))
    add_routes(server, apis[2], cfg)
    return server
