"""Images of notes: decoding to RGB with defined mode handling, and the encoder's preprocessing transform.

Mode handling (docs/data.md has the full table):

* RGB, L (grayscale), 1 (bilevel): decoded as is (grayscale replicated to RGB). Not reported.
* CMYK, YCbCr, palette (P), alpha (RGBA, LA, PA, ...), 16/32-bit integer grayscale (I;16*, I): converted to RGB and
  reported as converted, with the original mode. Alpha is flattened onto white; integer grayscale is rescaled from
  its 16-bit range to 8 bits (a plain ``convert`` would clip it to white).
* Float (F) and any mode PIL cannot convert: ``unsupported_image_mode``. A missing file: ``missing_image``;
  undecodable, truncated or random bytes: ``bad_image``. A bad image is never replaced by a blank one.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from notellm2_pl.data.problems import DataError
from notellm2_pl.plugins.contract import ImageConfig

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_INT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
_PLAIN_MODES = {"RGB", "L", "1"}

_HINT = ("Fix or remove the file, or pass --data.on_error skip to skip (and count) notes with bad images; "
         "`python -m notellm2_pl validate-data ROOT --on-error skip` lists them all.")


def decode_image(path: str | Path, data: bytes | None = None) -> tuple[Image.Image, str | None]:
    """Decode an image file (or its bytes) to an RGB ``PIL.Image`` with the module's defined mode handling.

    Args:
        path: Image file; with ``data``, only the name used in messages.
        data: The file's bytes (notes read from prepared streaming chunks carry them); None: read ``path``.

    Returns:
        (RGB image, original mode if it was converted with a counted warning, else None).

    Raises:
        DataError: ``missing_image``, ``bad_image`` or ``unsupported_image_mode`` (see ``err.code``); the message
            names the file and what to do.
    """
    if data is None and not os.path.isfile(path):
        raise DataError(f"Image file not found: {path}. {_HINT}", code="missing_image", where=str(path))
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as img:
            img.load()
            return _to_rgb(img)
    except DataError:
        raise
    except Exception as err:  # decoders raise many exception types on hostile bytes
        raise DataError(f"Cannot decode image {path} ({type(err).__name__}: {err}). {_HINT}", code="bad_image",
                        where=str(path)) from err


def _to_rgb(img: Image.Image) -> tuple[Image.Image, str | None]:
    """(RGB copy of ``img``, its original mode when the conversion is reported, else None)."""
    mode = img.mode
    if mode == "RGB":
        return img.copy(), None
    if mode in _PLAIN_MODES:
        return img.convert("RGB"), None
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "P+transparency"
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat, mode
    if mode in _INT_MODES:
        arr = np.asarray(img).astype(np.float64)
        arr = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)  # 16-bit range -> 8 bits
        return Image.fromarray(arr, "L").convert("RGB"), mode
    if mode == "F":
        raise DataError(f"Image mode F (32-bit float) has no defined RGB conversion ({img.filename or 'image'}). "
                        f"Save it as 8-bit RGB.", code="unsupported_image_mode")
    try:
        return img.convert("RGB"), mode
    except (ValueError, OSError) as err:
        raise DataError(f"Image mode {mode} cannot be converted to RGB ({err}). Save it as 8-bit RGB.",
                        code="unsupported_image_mode") from err


def load_image(path: str, data: bytes | None = None) -> Image.Image:
    """Decode an image (the file, or ``data``: its bytes) to RGB; a missing or undecodable one raises DataError
    naming it (never a blank image).

    Conversions (:func:`decode_image`) are counted when the data is checked at setup
    (:func:`notellm2_pl.data.validation.check_images`), not here.
    """
    return decode_image(path, data)[0]


def build_image_transform(cfg: ImageConfig, train_flip: bool = False) -> Callable[[Image.Image], torch.Tensor]:
    """Resize -> CenterCrop -> [RandomHorizontalFlip] -> tensor -> Normalize, from the encoder's ImageConfig.

    Args:
        cfg: The vision encoder's preprocessing.
        train_flip: Add a random horizontal flip (training only).

    Returns:
        A transform from a PIL image to a normalised ``(3, S, S)`` float tensor.
    """
    from torchvision.transforms import v2  # heavy: imported only for models with a vision tower

    interp = getattr(v2.InterpolationMode, cfg.interpolation.upper())
    steps = [v2.ToImage(), v2.Resize(cfg.size, interpolation=interp, antialias=True), v2.CenterCrop(cfg.size)]
    if train_flip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(cfg.mean), list(cfg.std))]
    return v2.Compose(steps)
