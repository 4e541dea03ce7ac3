"""In-memory cache of a frozen vision tower's features, so repeated passes over the same images skip the tower.

Keys are a hash of the exact preprocessed pixels plus the encoder's ``cache_key()``, so a different transform,
image size or encoder gives different keys. The cache is cleared when the tower's weights change (tracked
through the parameters' in-place version counters, e.g. after ``load_state_dict``). It refuses to serve a tower
that has trainable parameters or is in training mode: cached features would then be stale.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch

from notellm2_pl.interfaces import VisionEncoder, VisionOutput


class FeatureCacheError(RuntimeError):
    """The cache cannot be used for this tower / transform; the message says what to change."""


class VisionFeatureCache:
    """LRU cache of ``(tokens, pooled)`` per preprocessed image.

    Args:
        max_items: Maximum number of images kept (None: unbounded). A demo-size dataset (a few thousand images of
            16-49 tokens) needs a few hundred MB in fp32.
        store_dtype: dtype of the stored features (``torch.float32`` keeps results bit-identical).
    """

    def __init__(self, max_items: int | None = None, store_dtype: torch.dtype = torch.float32) -> None:
        self.max_items = max_items
        self.store_dtype = store_dtype
        self._store: OrderedDict[bytes, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._weights_version: tuple | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        """Drop every entry."""
        self._store.clear()

    def _check(self, vision: VisionEncoder) -> None:
        if any(p.requires_grad for p in vision.parameters()):
            raise FeatureCacheError("The vision feature cache needs a frozen vision tower; set "
                                    "--model.freeze_vision true or --model.feature_cache false.")
        if vision.training:
            raise FeatureCacheError("The vision feature cache needs the vision tower in eval mode (no dropout).")
        version = tuple((id(p), p._version) for p in vision.parameters())
        if version != self._weights_version:
            self.clear()
            self._weights_version = version

    def _keys(self, vision: VisionEncoder, pixel_values: torch.Tensor) -> list[bytes]:
        prefix = vision.cache_key().encode()
        flat = pixel_values.detach().float().cpu().contiguous()
        return [hashlib.blake2b(prefix + x.numpy().tobytes(), digest_size=16).digest() for x in flat]

    def __call__(self, vision: VisionEncoder, pixel_values: torch.Tensor) -> VisionOutput:
        """Features of ``pixel_values (B, 3, S, S)``: cached rows are reused, the rest computed and stored."""
        self._check(vision)
        keys = self._keys(vision, pixel_values)
        rows: list[tuple[torch.Tensor, torch.Tensor] | None] = [self._get(k) for k in keys]
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            with torch.no_grad():
                out = vision(pixel_values[missing])
            for j, i in enumerate(missing):
                rows[i] = self._put(keys[i], out.tokens[j], out.pooled[j])
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        device = pixel_values.device
        tokens = torch.stack([t for t, _ in rows]).to(device)  # (B, N, D_v)
        pooled = torch.stack([p for _, p in rows]).to(device)  # (B, D_v)
        return VisionOutput(tokens=tokens, pooled=pooled)

    def _put(self, key: bytes, tokens: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        row = (tokens.detach().to("cpu", self.store_dtype), pooled.detach().to("cpu", self.store_dtype))
        self._store[key] = row
        if self.max_items is not None and len(self._store) > self.max_items:
            self._store.popitem(last=False)
        return row

    def _get(self, key: bytes) -> tuple[torch.Tensor, torch.Tensor] | None:
        if key not in self._store:
            return None
        self._store.move_to_end(key)
        return self._store[key]
