"""Cache of a frozen vision tower's features, so repeated passes over the same images skip the tower.

Two levels, both keyed so that a stale feature is never served:

* **In memory** (:class:`VisionFeatureCache`, LRU). A row's key is its image *file* key when the batch carries one
  (``image_keys``, see below), else a hash of its exact preprocessed pixels; either way prefixed by the encoder's
  *namespace*: a hash of ``vision.cache_key()`` and of the tower's weights. The memory level is cleared when the
  tower's weights change (tracked through the parameters' in-place version counters, e.g. ``load_state_dict``).
* **On disk** (:class:`FeatureStore`, ``model.encoder.feature_cache_dir``): one small file per image under
  ``<dir>/<namespace>/<file key>.pt``, written atomically. The file key hashes the image file's identity (absolute
  path, size, modification time) and the preprocessing (:class:`~notellm2_pl.plugins.contract.ImageConfig`), so an
  edited image, another image size or normalisation, or other tower weights all miss. Because the store is on
  disk, data-loader workers see it: for an image whose features are stored, the worker does not decode the image
  at all (the batch marks the row in ``pixels_skipped``), which is where most of a later epoch's saving comes from.
  Runs over the same images with the same tower (e.g. an ablation grid) share the store.

The cache refuses to serve a tower that has trainable parameters or is in training mode (its features would be
stale), and the data side refuses random training transforms (``data.train_flip``) with it.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from notellm2_pl.atomic import atomic_open
from notellm2_pl.plugins.contract import ImageConfig, VisionEncoder, VisionOutput


class FeatureCacheError(RuntimeError):
    """The cache cannot be used for this tower / transform; the message says what to change."""


def image_file_key(path: str | os.PathLike[str], image_config: ImageConfig) -> str:
    """Key of one image file under one preprocessing: absolute path, size, mtime (ns) and the ImageConfig."""
    p = os.path.abspath(path)
    st = os.stat(p)
    ident = f"{p}|{st.st_size}|{st.st_mtime_ns}|{image_config!r}"
    return hashlib.blake2b(ident.encode(), digest_size=16).hexdigest()


def encoder_namespace(vision: VisionEncoder) -> str:
    """Hash of the encoder's ``cache_key()`` and of every parameter and buffer (its weights)."""
    h = hashlib.blake2b(vision.cache_key().encode(), digest_size=12)
    for name, t in sorted(vision.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())  # (bytes,)
    return h.hexdigest()


@dataclass(frozen=True)
class FeatureStore:
    """The on-disk level for one encoder namespace; picklable, so data-loader workers get a copy.

    Attributes:
        directory: Root folder (``model.encoder.feature_cache_dir``).
        namespace: :func:`encoder_namespace` of the tower whose features are stored.
    """

    directory: str
    namespace: str

    def path(self, key: str) -> Path:
        """File holding the features of ``key``."""
        return Path(self.directory) / self.namespace / f"{key}.pt"

    def has(self, key: str) -> bool:
        """Whether ``key``'s features are stored."""
        return self.path(key).is_file()

    def load(self, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(tokens (N, D_v), pooled (D_v,))`` of ``key``, or None when absent or unreadable."""
        try:
            obj = torch.load(self.path(key), map_location="cpu", weights_only=True)
        except (FileNotFoundError, RuntimeError, EOFError):
            return None
        return obj["tokens"], obj["pooled"]

    def save(self, key: str, tokens: torch.Tensor, pooled: torch.Tensor) -> None:
        """Store ``key``'s features atomically (concurrent writers of one key write identical files)."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb", fsync=False) as f:
            torch.save({"tokens": tokens.contiguous(), "pooled": pooled.contiguous()}, f)


class VisionFeatureCache:
    """LRU cache of ``(tokens, pooled)`` per image, in memory and optionally on disk.

    Args:
        max_items: Maximum number of images kept in memory (None: unbounded). A demo-size dataset (a few thousand
            images of 16-49 tokens) needs a few hundred MB in fp32.
        store_dtype: dtype of the stored features (``torch.float32`` keeps results bit-identical).
        directory: Also keep features on disk here (:class:`FeatureStore`); None: memory only.
    """

    def __init__(self, max_items: int | None = None, store_dtype: torch.dtype = torch.float32,
                 directory: str | os.PathLike[str] | None = None) -> None:
        self.max_items = max_items
        self.store_dtype = store_dtype
        self.directory = None if directory is None else os.fspath(directory)
        self._store: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._weights_version: tuple | None = None
        self._namespace = ""
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        """Drop every in-memory entry (the disk level is keyed by weights and needs no clearing)."""
        self._store.clear()

    def namespace(self, vision: VisionEncoder) -> str:
        """:func:`encoder_namespace` of ``vision``, recomputed (and memory cleared) when its weights change."""
        version = tuple((id(p), p._version) for p in vision.parameters())
        if version != self._weights_version:
            self.clear()
            self._weights_version = version
            self._namespace = encoder_namespace(vision)
        return self._namespace

    def store(self, vision: VisionEncoder) -> FeatureStore | None:
        """The disk level for ``vision``'s current weights (None without a directory); given to the data side."""
        return None if self.directory is None else FeatureStore(self.directory, self.namespace(vision))

    def _check(self, vision: VisionEncoder) -> str:
        if any(p.requires_grad for p in vision.parameters()):
            raise FeatureCacheError("The vision feature cache needs a frozen vision tower; set "
                                    "--model.freeze_vision true or --model.encoder.feature_cache false.")
        if vision.training:
            raise FeatureCacheError("The vision feature cache needs the vision tower in eval mode (no dropout).")
        return self.namespace(vision)

    @staticmethod
    def _pixel_keys(pixel_values: torch.Tensor) -> list[str]:
        flat = pixel_values.detach().float().cpu().contiguous()
        return ["px-" + hashlib.blake2b(x.numpy().tobytes(), digest_size=16).hexdigest() for x in flat]

    def __call__(self, vision: VisionEncoder, pixel_values: torch.Tensor, image_keys: list[str] | None = None,
                 pixels_skipped: torch.Tensor | None = None) -> VisionOutput:
        """Features of ``pixel_values (B, 3, S, S)``: cached rows are reused, the rest computed and stored.

        Args:
            vision: The frozen tower.
            pixel_values: Preprocessed images; rows marked in ``pixels_skipped`` are placeholders.
            image_keys: Per row, the image file key (:func:`image_file_key`) or ``""`` (key by pixels instead).
            pixels_skipped: ``(B,)`` bool: the data side found the row's features on disk and did not decode it.
        """
        namespace = self._check(vision)
        store = None if self.directory is None else FeatureStore(self.directory, namespace)
        b = pixel_values.shape[0]
        file_keys = list(image_keys) if image_keys is not None else [""] * b
        pixel_keys = self._pixel_keys(pixel_values) if "" in file_keys else file_keys  # hash only when needed
        keys = [f or p for f, p in zip(file_keys, pixel_keys)]
        rows = [self._get(f"{namespace}/{k}", store if f else None, k) for k, f in zip(keys, file_keys)]
        missing = [i for i, row in enumerate(rows) if row is None]
        skipped = [i for i in missing if pixels_skipped is not None and bool(pixels_skipped[i])]
        if skipped:
            raise FeatureCacheError(f"{len(skipped)} image(s) had their decoding skipped because their features were "
                                    f"on disk, but the tower's stored features are gone or its weights changed since "
                                    f"the data loader was built. Restart the run (or clear {self.directory}).")
        if missing:
            with torch.no_grad():
                out = vision(pixel_values[missing])
            for j, i in enumerate(missing):
                rows[i] = self._put(f"{namespace}/{keys[i]}", out.tokens[j], out.pooled[j])
                if store is not None and file_keys[i]:
                    store.save(keys[i], *rows[i])
        self.hits += b - len(missing)
        self.misses += len(missing)
        device = pixel_values.device
        tokens = torch.stack([t for t, _ in rows]).to(device)  # (B, N, D_v)
        pooled = torch.stack([p for _, p in rows]).to(device)  # (B, D_v)
        return VisionOutput(tokens=tokens, pooled=pooled)

    def _put(self, key: str, tokens: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        row = (tokens.detach().to("cpu", self.store_dtype), pooled.detach().to("cpu", self.store_dtype))
        self._store[key] = row
        if self.max_items is not None and len(self._store) > self.max_items:
            self._store.popitem(last=False)
        return row

    def _get(self, key: str, store: FeatureStore | None, file_key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        if key in self._store:
            self._store.move_to_end(key)
            return self._store[key]
        row = store.load(file_key) if store is not None else None
        return None if row is None else self._put(key, *row)
