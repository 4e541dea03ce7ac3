"""Embedding export from ``predict``: a Lightning prediction writer sharded per rank, and the loader that merges it.

Layout of an embeddings directory (every file written atomically: temp file + ``os.replace``)::

    OUT/meta.json                          probe, split, keys (e_m[, e_v]), dim, world_size (rank 0, at start)
    OUT/shards/rank0000-part0000.e_m.npy   (n, d) float32, L2-normalised
    OUT/shards/rank0000-part0000.e_v.npy   (n, d) float32 (mICL models only)
    OUT/shards/rank0000-part0000.ids.json  the n note ids of those rows, in row order (written last: the commit)
    OUT/shards/rank0000.done.json          parts and rows of rank 0 (written when the rank has finished)

Any tool reads a shard with ``numpy.load`` and ``json.load``; :func:`load_embeddings` merges the shards of all ranks
into ``(ids, matrix)``, drops the duplicate rows a distributed sampler pads with, and sorts by note id.

Use with the ``predict`` command::

    python -m notellm2_pl predict --config recipes/demo.yaml --ckpt_path runs/demo/checkpoints/best.ckpt \\
        --trainer.callbacks+=notellm2_pl.retrieval.prediction_writer.EmbeddingWriter \\
        --trainer.callbacks.output_dir runs/demo/embeddings/full --return_predictions false
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from notellm2_pl.atomic import atomic_open, atomic_write_text
from notellm2_pl.data.schema import EMBEDDING_KEYS, NoteBatch, embedding_keys

log = logging.getLogger(__name__)

FORMAT = "notellm2-embeddings"


# ------------------------------------------------------------------------------------------------ atomic files
def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_npy(path: str | os.PathLike[str], arr: np.ndarray) -> None:
    """Write an array in ``.npy`` format (no pickle), atomically."""
    with atomic_open(path, "wb") as f:
        np.save(f, arr, allow_pickle=False)


# ------------------------------------------------------------------------------------------------ shards
def shard_stem(rank: int, part: int) -> str:
    """File stem of one shard: ``rank0000-part0000``."""
    return f"rank{rank:04d}-part{part:04d}"


def write_shard(out_dir: str | os.PathLike[str], rank: int, part: int, ids: Sequence[str],
                arrays: dict[str, np.ndarray]) -> None:
    """Write one shard: one ``.npy`` per embedding key, then the ids (their presence marks the shard complete).

    Args:
        out_dir: Embeddings directory.
        rank: Global rank that produced the rows.
        part: Shard number within that rank.
        ids: Note ids of the rows.
        arrays: ``{key: (n, d) array}`` with ``n == len(ids)``.
    """
    shards = Path(out_dir) / "shards"
    for key, arr in arrays.items():
        if arr.shape[0] != len(ids):
            raise ValueError(f"Shard {shard_stem(rank, part)}: {arr.shape[0]} rows of {key} for {len(ids)} ids.")
        write_npy(shards / f"{shard_stem(rank, part)}.{key}.npy", np.ascontiguousarray(arr, dtype=np.float32))
    write_json(shards / f"{shard_stem(rank, part)}.ids.json", [str(i) for i in ids])


def write_done(out_dir: str | os.PathLike[str], rank: int, parts: int, rows: int) -> None:
    """Mark a rank as finished (``shards/rank{r}.done.json``)."""
    write_json(Path(out_dir) / "shards" / f"rank{rank:04d}.done.json", {"rank": rank, "parts": parts, "rows": rows})


class EmbeddingWriter(BasePredictionWriter):
    """Writes the ``e_m`` (and ``e_v``) embeddings of ``predict`` with their note ids, sharded per rank.

    Rows are buffered on the host and flushed every ``shard_rows`` rows, so memory stays bounded on any catalogue
    (run ``predict`` with ``--return_predictions false`` so Lightning does not keep its own copy). Load the result
    with :func:`load_embeddings`, or evaluate it with ``python -m notellm2_pl evaluate --embeddings OUT``.

    Args:
        output_dir: Embeddings directory (created; this rank's old shards are replaced).
        shard_rows: Rows per shard file.
    """

    def __init__(self, output_dir: str, shard_rows: int = 200_000) -> None:
        super().__init__(write_interval="batch")
        if shard_rows <= 0:
            raise ValueError("shard_rows must be positive.")
        self.output_dir = Path(output_dir)
        self.shard_rows = shard_rows
        self._ids: list[str] = []
        self._bufs: dict[str, list[np.ndarray]] = {}
        self._part = 0
        self._rows = 0

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rank = trainer.global_rank
        shards = self.output_dir / "shards"
        shards.mkdir(parents=True, exist_ok=True)
        for old in shards.glob(f"rank{rank:04d}[-.]*"):  # stale shards of an earlier run of this rank
            old.unlink()
        self._ids, self._bufs, self._part, self._rows = [], {}, 0, 0
        if trainer.is_global_zero:
            write_json(self.output_dir / "meta.json", self._meta(trainer, pl_module))

    @staticmethod
    def _meta(trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        dm = getattr(trainer, "datamodule", None)
        dhp = dict(getattr(dm, "hparams", {}) or {})
        enc = getattr(pl_module, "encoder", None)
        micl = bool(getattr(enc, "micl", False))
        return {
            "format": FORMAT,
            "version": 1,
            "world_size": int(trainer.world_size),
            "keys": embedding_keys(micl),
            "probe": dhp.get("probe", "full"),
            "split": dhp.get("predict_split", "test"),
            "data_root": str(Path(dhp["root"]).resolve()) if dhp.get("root") else None,
            "variant": getattr(enc, "variant", None),
        }

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: Mapping[str, Any],
                           batch_indices: Sequence[int] | None, batch: NoteBatch, batch_idx: int,
                           dataloader_idx: int) -> None:
        self._ids.extend(str(i) for i in prediction["note_ids"])
        for key in EMBEDDING_KEYS:
            if prediction.get(key) is not None:
                self._bufs.setdefault(key, []).append(prediction[key].detach().float().cpu().numpy())
        if len(self._ids) >= self.shard_rows:
            self._flush(trainer.global_rank)

    def _flush(self, rank: int) -> None:
        if not self._ids:
            return
        arrays = {k: np.concatenate(v) for k, v in self._bufs.items()}
        write_shard(self.output_dir, rank, self._part, self._ids, arrays)
        self._rows += len(self._ids)
        self._part += 1
        self._ids, self._bufs = [], {}

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush(trainer.global_rank)
        write_done(self.output_dir, trainer.global_rank, self._part, self._rows)
        log.info("Rank %d wrote %d embeddings in %d shard(s) to %s", trainer.global_rank, self._rows, self._part,
                 self.output_dir)


# ------------------------------------------------------------------------------------------------ loading
def read_meta(emb_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``meta.json`` of an embeddings directory."""
    path = Path(emb_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{emb_dir} is not an embeddings directory (no meta.json). Write one with: python -m notellm2_pl predict "
            f"--config RECIPE --ckpt_path CKPT "
            f"--trainer.callbacks+=notellm2_pl.retrieval.prediction_writer.EmbeddingWriter "
            f"--trainer.callbacks.output_dir {emb_dir}")
    return json.loads(path.read_text(encoding="utf-8"))


def load_embeddings(emb_dir: str | os.PathLike[str], key: str = EMBEDDING_KEYS[0],
                    sort: bool = True) -> tuple[list[str], np.ndarray]:
    """Merge the shards of every rank into ``(ids, matrix)``.

    Duplicate ids (the padding of a distributed sampler) keep their first row. Every rank must have finished.

    Args:
        emb_dir: Embeddings directory written by :class:`EmbeddingWriter` (or :func:`write_shard`/:func:`write_done`).
        key: ``e_m`` (multimodal embedding) or ``e_v`` (mICL visual embedding).
        sort: Sort rows by note id (else: rank, shard, row order).

    Returns:
        ``(ids, emb)``: N unique note ids and the (N, d) float32 matrix, row i belonging to ``ids[i]``.

    Raises:
        FileNotFoundError: Missing directory, rank marker or shard file (the message says what to re-run).
        KeyError: If ``key`` was not written (e.g. ``e_v`` of a model without mICL).
    """
    emb_dir = Path(emb_dir)
    meta = read_meta(emb_dir)
    if key not in meta.get("keys", [EMBEDDING_KEYS[0]]):
        raise KeyError(f"{emb_dir} has no {key!r} embeddings (keys: {meta.get('keys')}); e_v exists only for mICL "
                       f"models.")
    ids: list[str] = []
    mats: list[np.ndarray] = []
    for rank in range(int(meta["world_size"])):
        done = emb_dir / "shards" / f"rank{rank:04d}.done.json"
        if not done.is_file():
            raise FileNotFoundError(f"Rank {rank} of {emb_dir} did not finish ({done} missing); re-run predict.")
        parts = json.loads(done.read_text())["parts"]
        for part in range(parts):
            stem = emb_dir / "shards" / shard_stem(rank, part)
            part_ids = json.loads(Path(f"{stem}.ids.json").read_text(encoding="utf-8"))
            arr = np.load(f"{stem}.{key}.npy", allow_pickle=False)
            if arr.shape[0] != len(part_ids):
                raise ValueError(f"{stem}: {arr.shape[0]} rows for {len(part_ids)} ids; re-run predict.")
            ids.extend(part_ids)
            mats.append(arr)
    if not mats:
        raise FileNotFoundError(f"{emb_dir} holds no embeddings; re-run predict.")
    emb = np.concatenate(mats).astype(np.float32, copy=False)
    first: dict[str, int] = {}
    for i, nid in enumerate(ids):
        first.setdefault(nid, i)
    order = sorted(first) if sort else list(first)
    rows = np.fromiter((first[n] for n in order), dtype=np.int64, count=len(order))
    if len(order) < len(ids):
        log.info("Dropped %d duplicate rows (distributed sampler padding).", len(ids) - len(order))
    return order, emb[rows]


def write_embeddings(out_dir: str | os.PathLike[str], ids: Sequence[str], arrays: dict[str, np.ndarray],
                     probe: str = "full", split: str = "test", data_root: str | None = None,
                     variant: str | None = None) -> Path:
    """Write in-memory embeddings as a one-rank embeddings directory (the layout :class:`EmbeddingWriter` writes).

    Args:
        out_dir: Embeddings directory (this writer's earlier shards are replaced).
        ids: Note ids, one per row.
        arrays: ``{"e_m": (N, d)[, "e_v": (N, d)]}``.
        probe: Input probe the embeddings were computed with.
        split: Split of the notes.
        data_root: Dataset root, recorded for ``evaluate`` / ``search``.
        variant: Model variant (``micl``, ``basic``, ``text``).

    Returns:
        The directory.
    """
    out = Path(out_dir)
    shards = out / "shards"
    if shards.is_dir():
        for old in shards.glob("rank*"):
            old.unlink()
    meta = {"format": FORMAT, "version": 1, "world_size": 1, "keys": [k for k in EMBEDDING_KEYS if k in arrays],
            "probe": probe, "split": split, "data_root": str(Path(data_root).resolve()) if data_root else None,
            "variant": variant}
    write_json(out / "meta.json", meta)
    write_shard(out, 0, 0, ids, arrays)
    write_done(out, 0, 1, len(ids))
    return out
