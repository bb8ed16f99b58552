"""Caffe preprocessing of a photograph: resize 256x256 (bilinear), centre crop, RGB->BGR,
subtract the per-channel mean (B, G, R) = (104, 117, 123), layout C x H x W, no scaling."""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["ImageError", "load_image", "preprocess", "MEAN_BGR", "RESIZE", "default_image"]

MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
RESIZE = 256


class ImageError(ValueError):
    """An image that cannot be read; the message names the file."""


def default_image() -> Path:
    """matplotlib's sample photograph grace_hopper.jpg (public domain)."""
    import matplotlib.cbook
    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def load_image(path: str | Path, size: int = 227) -> tuple[np.ndarray, list[str]]:
    """Read and preprocess an image file. Returns (float32 (3, size, size), notes)."""
    from PIL import Image, UnidentifiedImageError
    path = Path(path)
    notes: list[str] = []
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode != "RGB":
                notes.append(f"{path}: {mode} image converted to RGB")
                im = im.convert("RGB")
            if min(im.size) < size:
                notes.append(f"{path}: image {im.size[0]}x{im.size[1]} is smaller than the "
                             f"{size}x{size} crop; resized up to {RESIZE}x{RESIZE}")
            arr = preprocess(im, size)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: cannot read image ({e})") from None
    return arr, notes


def preprocess(im, size: int = 227) -> np.ndarray:
    """PIL RGB image -> Caffe input (3, size, size) float32."""
    from PIL import Image
    if size > RESIZE:
        raise ValueError(f"crop {size} is larger than the {RESIZE}x{RESIZE} resize")
    im = im.resize((RESIZE, RESIZE), Image.BILINEAR)
    a = np.asarray(im, dtype=np.float32)[:, :, ::-1]       # RGB -> BGR
    off = (RESIZE - size) // 2
    a = a[off:off + size, off:off + size, :] - MEAN_BGR
    return np.ascontiguousarray(a.transpose(2, 0, 1))
