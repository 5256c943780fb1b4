"""Datasets: real handwritten digits without a download, MNIST and Fashion-MNIST from IDX files,
and small synthetic problems.

- :func:`load_digits`: the 1,797 8x8 handwritten digits that ship inside scikit-learn
  (``pip install 'nnframe[datasets]'``); read straight from scikit-learn's bundled file.
- :func:`load_mnist`: MNIST or Fashion-MNIST read from the IDX files (gzip or not), found in a
  directory you give, in the cache, or downloaded to the cache from a configurable mirror and
  verified against their MD5 checksums. Offline, it says exactly which files to put where.
- :func:`read_idx` / :func:`write_idx`: the IDX format itself.
- Synthetic: :func:`make_spirals`, :func:`make_moons`, :func:`make_xor`,
  :func:`make_sine_sequences`; all float32 inputs, int64 labels, seeded by ``rng``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import math
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np

from nnframe.core.errors import check_hyper
from nnframe.core.random import get_rng

__all__ = [
    "load_digits",
    "load_mnist",
    "read_idx",
    "write_idx",
    "default_cache_dir",
    "MNIST_MIRRORS",
    "MNIST_MD5",
    "make_spirals",
    "make_moons",
    "make_xor",
    "make_sine_sequences",
]


# ---------------------------------------------------------------------- digits (scikit-learn)
def load_digits(as_images: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 handwritten digits bundled with scikit-learn (UCI optdigits test set).

    Args:
        as_images: return x as (N, 1, 8, 8) images instead of (N, 64) rows.

    Returns:
        ``(x, y)``: x float32 in [0, 1] (the 0..16 pixel counts divided by 16), y int64 in 0..9;
        N = 1797.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "load_digits: expected scikit-learn (which ships the digits) to be installed, got "
            "none. Install it with: pip install 'nnframe[datasets]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if path.exists():  # read the bundled file directly: no need to import scikit-learn itself
        data = np.loadtxt(path, delimiter=",", dtype=np.float32)
        x, y = data[:, :-1], data[:, -1].astype(np.int64)
    else:  # pragma: no cover - a future scikit-learn may move the file
        from sklearn.datasets import load_digits as sk_load_digits

        bunch = sk_load_digits()
        x, y = bunch.data.astype(np.float32), bunch.target.astype(np.int64)
    x = x / np.float32(16.0)
    return (x.reshape(-1, 1, 8, 8) if as_images else x), y


# ---------------------------------------------------------------------- IDX format
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.kind + str(dt.itemsize): code for code, dt in _IDX_DTYPES.items()}


def _open(path):
    path = os.fspath(path)
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")  # noqa: SIM115


def read_idx(path) -> np.ndarray:
    """Reads an IDX file (the MNIST format; gzip-compressed or not, detected from its bytes).

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each size as a big-endian uint32;
    the big-endian data follows. Returns the array in native byte order.
    """
    who = f"read_idx({os.fspath(path)!r})"
    with _open(path) as f:
        head = f.read(4)
        if len(head) < 4 or head[:2] != b"\x00\x00" or head[2] not in _IDX_DTYPES:
            raise ValueError(
                f"{who}: expected an IDX header (0x0000, a type code, ndim), got {head.hex()!r}"
            )
        dtype, ndim = _IDX_DTYPES[head[2]], head[3]
        if ndim > 32:
            raise ValueError(f"{who}: expected at most 32 dimensions, got {ndim}")
        dims_raw = f.read(4 * ndim)
        if len(dims_raw) < 4 * ndim:
            raise ValueError(f"{who}: expected {ndim} dimension sizes, got a truncated header")
        shape = struct.unpack(f">{ndim}I", dims_raw)
        # exact integer arithmetic: (2**32 - 1) * 3 must not wrap around as an int64 would
        expected = math.prod(shape) * dtype.itemsize
        if not isinstance(f, gzip.GzipFile):  # the declared size must be the file's own
            available = os.fstat(f.fileno()).st_size - 4 - 4 * ndim
            if available != expected:
                raise ValueError(
                    f"{who}: expected {expected} data bytes for shape {shape}, got {available}"
                )
        data = _read_at_most(f, expected + 1)  # compressed: never more than the stream holds
    if len(data) != expected:
        raise ValueError(
            f"{who}: expected {expected} data bytes for shape {shape}, got "
            f"{len(data)}{'+' if len(data) > expected else ''}"
        )
    return (
        np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(shape)
    )


def _read_at_most(f, n: int, chunk: int = 1 << 20) -> bytes:
    """Up to ``n`` bytes of ``f``, read in chunks, so that memory follows what the file holds
    and not what its header declares."""
    parts, got = [], 0
    while got < n:
        part = f.read(min(chunk, n - got))
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def write_idx(path, array, compress: bool | None = None) -> None:
    """Writes ``array`` as an IDX file (gzip-compressed if ``compress``, or by default when the
    path ends in ``.gz``). Supported dtypes: uint8, int8, int16, int32, float32, float64."""
    a = np.asarray(array)
    key = a.dtype.kind + str(a.dtype.itemsize)
    if key not in _IDX_CODES or a.dtype.kind not in "uif" or (a.dtype.kind == "u" and key != "u1"):
        raise TypeError(
            f"write_idx: expected uint8, int8, int16, int32, float32 or float64, got {a.dtype}"
        )
    header = struct.pack(">BBBB", 0, 0, _IDX_CODES[key], a.ndim) + struct.pack(
        f">{a.ndim}I", *a.shape
    )
    body = a.astype(a.dtype.newbyteorder(">"), copy=False).tobytes()
    path = os.fspath(path)
    if compress is None:
        compress = path.endswith(".gz")
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + body)


# ---------------------------------------------------------------------- MNIST
MNIST_MIRRORS = {
    "digits": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
"""Default download locations per kind (tried in order)."""

MNIST_MD5 = {
    "digits": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
"""The published MD5 checksums of the gzip files."""


def default_cache_dir() -> Path:
    """``$NNFRAME_DATA``, else ``$XDG_CACHE_HOME/nnframe``, else ``~/.cache/nnframe``."""
    if os.environ.get("NNFRAME_DATA"):
        return Path(os.environ["NNFRAME_DATA"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nnframe"


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # integrity against the published sums
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _find(stem: str, dirs: list[Path]) -> Path | None:
    """The first of ``stem.gz`` / ``stem`` present in ``dirs``."""
    for d in dirs:
        for name in (stem + ".gz", stem):
            if (d / name).is_file():
                return d / name
    return None


def _download(url: str, target: Path, md5: str | None, timeout: float) -> None:
    """Downloads ``url`` into ``target`` through a temporary file, verifying ``md5`` before the
    file takes its final name (a failed or corrupted download leaves nothing behind)."""
    import urllib.request  # here, not at the top: ~25 ms that `import nnframe` need not pay

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
        if md5 is not None:
            got = _md5(Path(tmp))
            if got != md5:
                raise ValueError(
                    f"load_mnist: expected MD5 {md5} for {url}, got {got}. The download is "
                    "corrupted or the mirror serves other files; it was discarded"
                )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_mnist(
    kind: str = "digits",
    split: str = "train",
    *,
    path=None,
    cache_dir=None,
    mirror: str | None = None,
    download: bool = True,
    checksums: dict | str | None = "default",
    as_images: bool = False,
    timeout: float = 30.0,
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST (``kind='digits'``) or Fashion-MNIST (``kind='fashion'``) from the IDX files.

    The files (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]`` and the
    ``t10k-`` pair) are looked up in ``path`` (if given), then in ``cache_dir/<kind>``; missing
    ones are downloaded there from ``mirror`` (or :data:`MNIST_MIRRORS`; ``$NNFRAME_MNIST_MIRROR``
    overrides the default) unless ``download=False``.

    Args:
        kind: 'digits' or 'fashion'.
        split: 'train' (60,000 images) or 'test' (10,000).
        path: a directory that already holds the files (nothing is downloaded into it).
        cache_dir: the cache root (default :func:`default_cache_dir`).
        mirror: a base URL ending in '/' (``file://`` URLs work too).
        download: allow downloading missing files.
        checksums: 'default' (the published MD5s of the .gz files), None (no verification),
            or a dict ``{file name: md5}``. Downloads are verified before they enter the cache;
            cached .gz files are verified when read.
        as_images: x as (N, 1, 28, 28) instead of (N, 784).
        timeout: seconds per download request.

    Returns:
        ``(x, y)``: x float32 in [0, 1], y int64 labels.
    """
    check_hyper("load_mnist", "kind", kind, kind in MNIST_MD5, "must be 'digits' or 'fashion'")
    check_hyper(
        "load_mnist", "split", split, split in ("train", "test"), "must be 'train' or 'test'"
    )
    prefix = "train" if split == "train" else "t10k"
    stems = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
    sums = MNIST_MD5[kind] if checksums == "default" else (checksums or {})
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache = cache / kind
    dirs = ([Path(path)] if path is not None else []) + [cache]
    mirrors = (
        [mirror]
        if mirror
        else [os.environ["NNFRAME_MNIST_MIRROR"]]
        if os.environ.get("NNFRAME_MNIST_MIRROR")
        else list(MNIST_MIRRORS[kind])
    )
    files = []
    for stem in stems:
        found = _find(stem, dirs)
        if found is None and download:
            name = stem + ".gz"
            errors = []
            for base in mirrors:
                url = base.rstrip("/") + "/" + name
                try:
                    _download(url, cache / name, sums.get(name), timeout)
                    found = cache / name
                    break
                except ValueError:
                    raise
                except OSError as e:  # urllib's URLError is an OSError
                    errors.append(f"{url}: {getattr(e, 'reason', e)}")
            if found is None:
                raise FileNotFoundError(_offline_message(kind, stems, dirs, errors))
        if found is None:
            raise FileNotFoundError(_offline_message(kind, stems, dirs, []))
        if found.name in sums and found.parent == cache:
            got = _md5(found)
            if got != sums[found.name]:
                raise ValueError(
                    f"load_mnist: expected MD5 {sums[found.name]} for {found}, got {got}. "
                    "Delete the file to download it again"
                )
        files.append(found)
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"load_mnist: expected images (N, H, W) and labels (N,), got {images.shape} from "
            f"{files[0]} and {labels.shape} from {files[1]}"
        )
    x = images.astype(np.float32) / np.float32(255.0)
    x = x[:, None] if as_images else x.reshape(len(x), -1)
    return x, labels.astype(np.int64)


def _offline_message(kind: str, stems: list[str], dirs: list[Path], errors: list[str]) -> str:
    places = " or ".join(str(d) for d in dirs)
    names = ", ".join(f"{s}.gz" for s in stems)
    tried = ("; download failed: " + "; ".join(errors)) if errors else ""
    return (
        f"load_mnist(kind={kind!r}): expected the IDX files {names} (gzip or not) in {places}, "
        f"got none{tried}. Download them on a connected machine (see "
        f"nnframe.training.datasets.MNIST_MIRRORS) and copy them into {dirs[-1]}, or pass path= to a "
        "directory that has them, or mirror= to a reachable copy"
    )


# ---------------------------------------------------------------------- synthetic
def make_spirals(n_samples: int = 200, noise: float = 0.2, n_arms: int = 2, rng=None):
    """Interleaved spiral arms in 2-D, one class per arm: the classic test of a network's
    capacity for non-linear boundaries.

    Returns:
        ``(x, y)``: x (n_samples, 2) float32 (roughly in [-1, 1]), y (n_samples,) int64.
    """
    check_hyper("make_spirals", "n_arms", n_arms, n_arms >= 2, "must be >= 2")
    rng = get_rng(rng)
    y = np.arange(n_samples) % n_arms
    t = np.sqrt(rng.uniform(0, 1, n_samples)) * 3 * np.pi  # denser near the centre
    angle = t + 2 * np.pi * y / n_arms
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1) / (3 * np.pi)
    x += rng.normal(0, noise / (3 * np.pi), x.shape)
    return x.astype(np.float32), y.astype(np.int64)


def make_moons(n_samples: int = 200, noise: float = 0.1, rng=None):
    """Two interleaving half circles (scikit-learn's ``make_moons`` shape), classes 0 and 1."""
    rng = get_rng(rng)
    n0 = (n_samples + 1) // 2
    n1 = n_samples - n0
    a0, a1 = np.linspace(0, np.pi, n0), np.linspace(0, np.pi, n1)
    x = np.concatenate(
        [np.stack([np.cos(a0), np.sin(a0)], 1), np.stack([1 - np.cos(a1), 0.5 - np.sin(a1)], 1)]
    )
    x += rng.normal(0, noise, x.shape)
    y = np.concatenate([np.zeros(n0, np.int64), np.ones(n1, np.int64)])
    order = rng.permutation(n_samples)
    return x[order].astype(np.float32), y[order]


def make_xor(n_samples: int = 200, noise: float = 0.1, rng=None):
    """Points near the four corners (+-1, +-1); class 1 when the signs differ (XOR)."""
    rng = get_rng(rng)
    corners = rng.integers(0, 2, size=(n_samples, 2))
    x = (2 * corners - 1) + rng.normal(0, noise, (n_samples, 2))
    y = (corners[:, 0] ^ corners[:, 1]).astype(np.int64)
    return x.astype(np.float32), y


def make_sine_sequences(n_sequences: int = 100, seq_len: int = 20, noise: float = 0.05, rng=None):
    """Noisy sine waves with random frequency and phase, for next-step prediction.

    Returns:
        ``(x, y)``: x (n_sequences, seq_len, 1) float32 (the noisy wave), y (n_sequences, 1)
        float32 (the clean value one step after the end).
    """
    check_hyper("make_sine_sequences", "seq_len", seq_len, seq_len >= 1, "must be >= 1")
    rng = get_rng(rng)
    freq = rng.uniform(0.05, 0.25, (n_sequences, 1))
    phase = rng.uniform(0, 2 * np.pi, (n_sequences, 1))
    t = np.arange(seq_len + 1)[None, :]
    clean = np.sin(2 * np.pi * freq * t + phase)
    x = clean[:, :seq_len] + rng.normal(0, noise, (n_sequences, seq_len))
    return x[..., None].astype(np.float32), clean[:, seq_len:].astype(np.float32)
