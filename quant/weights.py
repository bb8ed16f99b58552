"""Find, download and load SqueezeNet weights: one entry point, :func:`load_weights`.

Resolution order when no path is given:

1. ``$SQUEEZEFORGE_MODELS`` (the layout of the shared models folder, see :data:`CANDIDATES`);
2. the user cache, ``$SQUEEZEFORGE_CACHE`` or ``~/.cache/squeezeforge``;
3. the official DeepScale caffemodel, downloaded into the cache and verified against its git
   blob SHA-1 (a mismatch deletes the download and raises :class:`WeightError`);
4. seeded synthetic weights, with a one-line note in ``FloatModel.notes`` saying why.

A file that is found but unusable (truncated, wrong shapes, NaN) is an error, never a silent
fallback to synthetic weights.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .caffe import load_caffemodel
from .deep_compression import decode_compressed, load_compressed
from .model import FloatModel, WeightError, synthetic_model
from .network import Network, squeezenet
from .onnx_import import load_onnx

__all__ = ["load_weights", "load_file", "find_weights", "download_weights", "git_blob_sha1",
           "cache_dir", "DownloadError", "DOWNLOAD_URLS", "GIT_BLOB_SHA1", "CANDIDATES",
           "DOWNLOAD_TIMEOUT"]

_RAW = "https://raw.githubusercontent.com/DeepScale/SqueezeNet/master"
DOWNLOAD_URLS = {
    "v1.0": f"{_RAW}/SqueezeNet_v1.0/squeezenet_v1.0.caffemodel",
    "v1.1": f"{_RAW}/SqueezeNet_v1.1/squeezenet_v1.1.caffemodel",
}
# what `git hash-object` prints for the files in the DeepScale repository
GIT_BLOB_SHA1 = {
    "v1.0": "a381d848b43d7048c3b362238ece2386c21d6ff0",
    "v1.1": "9d2fc33abf653a6e8b2ee6cc63ede0e72ec67f44",
}
DOWNLOAD_TIMEOUT = 10.0   # seconds, for connecting and for each read

# Files looked for inside a models folder or the cache, best first (glob patterns).
CANDIDATES = {
    "v1.1": ("squeezenet_v1.1/squeezenet_v1.1.caffemodel", "squeezenet_v1.1.caffemodel",
             "squeezenet_v1.1/squeezenet_v1.1.onnx", "squeezenet_v1.1.onnx"),
    "v1.0": ("squeezenet_v1.0/squeezenet_v1.0.caffemodel", "squeezenet_v1.0.caffemodel",
             "squeezenet_v1.0/squeezenet_v1.0*.caffemodel", "squeezenet_v1.0*.caffemodel",
             "squeezenet_v1.0_deep_compression/compressed_SqueezeNet.net",
             "compressed_SqueezeNet.net"),
}


class DownloadError(WeightError):
    """The download could not be made (no network, HTTP error, timeout, short read)."""


def git_blob_sha1(data: bytes) -> str:
    """The id git gives a file's content (what ``git hash-object FILE`` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def cache_dir() -> Path:
    """``$SQUEEZEFORGE_CACHE`` or ``~/.cache/squeezeforge`` (not created here)."""
    env = os.environ.get("SQUEEZEFORGE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "squeezeforge"


def find_weights(model: str, directory: str | Path) -> Path | None:
    """The best weight file for ``model`` inside ``directory`` (see :data:`CANDIDATES`)."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    for pattern in CANDIDATES[model]:
        hits = sorted(p for p in directory.glob(pattern) if p.is_file())
        if hits:
            return hits[0]
    return None


def load_file(path: str | Path, net: Network) -> FloatModel:
    """Load one weight file for ``net``, chosen by extension (``.caffemodel``, ``.onnx``,
    ``.net``) or, for any other name, by content."""
    path = Path(path)
    if not path.exists():
        raise WeightError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".caffemodel":
        return load_caffemodel(path, net)
    if suffix == ".onnx":
        return load_onnx(path, net)
    if suffix == ".net":
        return load_compressed(path, net)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise WeightError(f"{path}: cannot read ({e.strerror})") from None
    try:
        decode_compressed(data, net, str(path))
        return load_compressed(path, net)
    except WeightError:
        pass
    if data[:1] == b"\x08":   # ModelProto starts with ir_version (field 1, varint)
        return load_onnx(path, net)
    return load_caffemodel(path, net)


def download_weights(model: str, cache: str | Path | None = None, *, progress: bool = True,
                     url: str | None = None, sha1: str | None = None,
                     timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Download the official caffemodel of ``model`` into ``cache`` and verify its SHA-1.

    The file appears in the cache only once verified. Raises :class:`DownloadError` when the
    transfer fails and :class:`WeightError` when the content does not match ``sha1``.
    """
    from tqdm import tqdm
    url = url or DOWNLOAD_URLS[model]
    sha1 = sha1 or GIT_BLOB_SHA1[model]
    cache = Path(cache) if cache is not None else cache_dir()
    dest = cache / Path(url).name
    chunks = []
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr,
                      disable=not progress, leave=False) as bar:
                while chunk := r.read(1 << 16):
                    chunks.append(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"download of {url} failed ({_one_line(reason)})") from None
    data = b"".join(chunks)
    if total is not None and len(data) != total:
        raise DownloadError(f"{url}: download incomplete ({len(data)} of {total} bytes)")
    part = dest.with_name(dest.name + ".part")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        part.write_bytes(data)
    except OSError as e:
        raise WeightError(f"{dest}: cannot write to the cache ({e.strerror})") from None
    got = git_blob_sha1(data)
    if got != sha1:
        part.unlink(missing_ok=True)
        raise WeightError(f"{url}: downloaded file has git blob SHA-1 {got}, expected {sha1}; "
                          f"the download was deleted")
    os.replace(part, dest)
    return dest


def load_weights(model: str, path: str | Path | None = None, *, download: bool = True,
                 progress: bool = True) -> FloatModel:
    """Weights for SqueezeNet ``model`` ("v1.0" or "v1.1") as a validated FloatModel.

    With ``path`` (a file or a folder) load exactly that; otherwise resolve as the module
    docstring says. ``download=False`` skips the network; ``progress`` shows a download bar
    on stderr.
    """
    net = squeezenet(model)
    if path is not None:
        path = Path(path)
        if path.is_dir():
            found = find_weights(model, path)
            if found is None:
                raise WeightError(f"{path}: no SqueezeNet {model} weights in this folder "
                                  f"(looked for {', '.join(CANDIDATES[model])})")
            return load_file(found, net)
        return load_file(path, net)
    why = []
    env = os.environ.get("SQUEEZEFORGE_MODELS")
    if env:
        found = find_weights(model, env)
        if found is not None:
            return load_file(found, net)
        why.append(f"none in SQUEEZEFORGE_MODELS={env}")
    else:
        why.append("no SQUEEZEFORGE_MODELS")
    cache = cache_dir()
    found = find_weights(model, cache)
    if found is not None:
        return load_file(found, net)
    why.append(f"none in the cache {cache}")
    if download:
        try:
            return load_file(download_weights(model, cache, progress=progress), net)
        except DownloadError as e:
            why.append(str(e))
    else:
        why.append("download disabled")
    fallback = synthetic_model(net)
    fallback.notes.append(f"no weights for {model} ({', '.join(why)}); "
                          f"using seeded synthetic weights")
    return fallback


def _one_line(e) -> str:
    return " ".join(str(e).split()) or type(e).__name__
