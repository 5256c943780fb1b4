"""Model files: a checked safetensors reader and an atomic writer, and save/load of whole models.

Files are plain safetensors (an 8-byte little-endian header length, a JSON header, then the raw
little-endian tensor bytes), so the ``safetensors`` package and PyTorch read nnframe's files and
nnframe reads theirs. The reader is nnframe's own: it validates every field before it touches the
body, so a malformed, truncated or hostile file raises :class:`ModelFormatError` (never another
exception, never a hang) and never makes it allocate more than the file's size. Nothing in a
file is imported, evaluated or unpickled.

nnframe adds string metadata (safetensors' ``__metadata__``):

- ``nnframe.format_version``: the file format version (a newer one than this nnframe knows is
  refused), and ``nnframe.version``: the nnframe version that wrote it;
- ``nnframe.sha256``: SHA-256 of the tensor bytes, and ``nnframe.header_sha256``: SHA-256 of a
  canonical form of the header (names, dtypes, shapes, offsets, other metadata). Both are
  verified on load: safetensors itself does not notice a flipped bit;
- ``nnframe.kind``: ``"weights"``, ``"model"`` or ``"checkpoint"``; ``nnframe.config``: the
  architecture as JSON (see :mod:`nnframe.io.config`) in model and checkpoint files.

Writes are atomic: a temporary file in the destination's directory, fsync, ``os.replace``, fsync
of the directory. An exception, a kill or a full disk during a save leaves the previous file
intact and loadable.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import time
import uuid
from collections.abc import Mapping

import numpy as np

from nnframe._version import __version__
from nnframe.core.backend import to_numpy
from nnframe.core.errors import ModelFormatError

FORMAT_VERSION = 1
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit: anything larger is refused unread

# safetensors dtype names <-> numpy (little-endian). BF16 is read (widened to float32: numpy has
# no bfloat16); F8 types are refused with a clear message.
_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),  # raw bits; converted to float32 after validation
}
_UNSUPPORTED = ("F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64")
_NAMES = {dt.str.replace(">", "<"): name for name, dt in _DTYPES.items() if name != "BF16"}
_NAMES["|b1"], _NAMES["|u1"], _NAMES["|i1"] = "BOOL", "U8", "I8"

_META_PREFIX = "nnframe."
_SHA = "nnframe.sha256"
_HEADER_SHA = "nnframe.header_sha256"


# ---------------------------------------------------------------------- low level: tensors
def save_file(
    tensors: Mapping[str, np.ndarray], path, metadata: Mapping[str, str] | None = None
) -> None:
    """Writes ``tensors`` (name -> array) and string ``metadata`` to ``path`` as safetensors,
    atomically, with nnframe's version and checksums added to the metadata.

    Raises TypeError for a non-numeric array or a non-string name or metadata value, and OSError
    (with the path and the reason) when the file cannot be written; the previous file at
    ``path``, if any, is then left as it was.
    """
    arrays = {}
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"save_file: expected str tensor names, got {type(name).__name__}")
        if name == "__metadata__":
            raise ValueError("save_file: '__metadata__' is reserved and cannot name a tensor")
        a = np.asarray(to_numpy(value))  # a device array is copied to the host
        key = a.dtype.str.replace(">", "<")
        if key not in _NAMES:
            raise TypeError(
                f"save_file: tensor {name!r}: expected a bool, integer or float array, "
                f"got dtype {a.dtype}"
            )
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)  # little-endian on disk
        arrays[name] = a if a.flags.c_contiguous else a.copy(order="C")
    meta = {str(k): v for k, v in (metadata or {}).items()}
    for k, v in meta.items():
        if not isinstance(v, str):
            raise TypeError(f"save_file: metadata {k!r}: expected a str, got {type(v).__name__}")
    meta["nnframe.format_version"] = str(FORMAT_VERSION)
    meta["nnframe.version"] = __version__

    # Offsets: larger items first so every tensor stays aligned to its itemsize (as safetensors
    # does); the header keeps the caller's order.
    order = sorted(arrays, key=lambda n: -arrays[n].dtype.itemsize)
    entries: dict[str, dict] = {}
    offset = 0
    for name in order:
        a = arrays[name]
        entries[name] = {
            "dtype": _NAMES[a.dtype.str],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + a.nbytes],
        }
        offset += a.nbytes
    body_hash = hashlib.sha256()
    for name in order:
        body_hash.update(arrays[name].reshape(-1).view(np.uint8))
    meta[_SHA] = body_hash.hexdigest()
    entries_in_order = {name: entries[name] for name in arrays}
    meta[_HEADER_SHA] = _header_digest(entries_in_order, meta)
    header = json.dumps({"__metadata__": meta, **entries_in_order}, separators=(",", ":"))
    raw = header.encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % 8)  # pad with spaces: the body starts 8-byte aligned
    chunks = [len(raw).to_bytes(8, "little"), raw]
    chunks += [arrays[name].reshape(-1).view(np.uint8) for name in order if arrays[name].nbytes]
    atomic_write(path, chunks)


def _header_digest(entries: Mapping[str, dict], metadata: Mapping[str, str]) -> str:
    """SHA-256 of a canonical form of the header (without the header checksum itself), so a
    renamed tensor, a changed dtype or shape, or edited metadata is noticed."""
    canonical = {
        "tensors": {
            name: [e["dtype"], list(e["shape"]), list(e["data_offsets"])]
            for name, e in entries.items()
        },
        "metadata": {k: v for k, v in metadata.items() if k != _HEADER_SHA},
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def load_file(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Reads a safetensors file, checking everything: returns ``(tensors, metadata)``.

    Tensors come back in the header's order, as writable native arrays (BF16 widened to
    float32). Raises :class:`ModelFormatError` saying what is wrong for any malformed file,
    and FileNotFoundError for a missing one.
    """
    path = os.fspath(path)
    who = f"load: {path!r}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"load: no such file: {path!r}", path) from None
    except OSError as e:
        raise ModelFormatError(f"{who}: cannot read it ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ModelFormatError(
            f"{who}: expected a safetensors file, got a directory. Give the path of a file"
        )
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
        raise ModelFormatError(f"{who}: expected a regular file, got a special file")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return _read(f, size, who)
    except OSError as e:
        raise ModelFormatError(f"{who}: cannot read it ({e.strerror or e})") from None


def _fail(who: str, what: str) -> ModelFormatError:
    return ModelFormatError(f"{who}: not a valid safetensors file: {what}")


def _read_exact(f, n: int, who: str, what: str) -> bytearray:
    buf = bytearray(n)
    got = f.readinto(buf) if n else 0
    if got != n:
        raise _fail(who, f"truncated {what}: expected {n} bytes, got {got}")
    return buf


def _sniff(start: bytes) -> str | None:
    """Names a well-known other format from the file's first bytes."""
    if start.startswith(b"PK\x03\x04") or start.startswith(b"PK\x05\x06"):
        return "a zip archive (numpy .npz, or a torch.save file)"
    if start[:1] == b"\x80" and start[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle (nnframe never unpickles files)"
    if start.startswith(b"\x93NUMPY"):
        return "a numpy .npy file"
    if start.startswith(b"\x89HDF"):
        return "an HDF5 file"
    return None


def _refuse_other_format(start: bytes, who: str) -> None:
    """A file that is not safetensors: say what it looks like (only asked once the header
    length or the header is invalid, since a valid length can begin with the same bytes)."""
    other = _sniff(start)
    if other:
        raise ModelFormatError(f"{who}: expected a safetensors file, got {other}")


def _read(f, size: int, who: str):
    if size == 0:
        raise _fail(who, "the file is empty")
    start = f.read(8)
    n = int.from_bytes(start, "little")
    if size < 8 or n > size - 8 or n > MAX_HEADER_BYTES:
        _refuse_other_format(start, who)
    if size < 8:
        raise _fail(who, f"the file has {size} byte(s), fewer than the 8-byte header length")
    if n > MAX_HEADER_BYTES:
        raise _fail(who, f"header length {n} is absurdly large (limit {MAX_HEADER_BYTES})")
    if n > size - 8:
        raise _fail(who, f"header length {n} is larger than the rest of the file ({size - 8})")
    raw = bytes(_read_exact(f, n, who, "header"))
    if not raw.startswith(b"{"):
        _refuse_other_format(start, who)
    header = _parse_header(raw, who)
    metadata, entries = _check_entries(header, who)
    body_len = size - 8 - n
    end = _check_offsets(entries, body_len, who)
    body = _read_exact(f, end, who, "body")
    if f.read(1):  # the file grew while we read it
        raise _fail(who, "trailing bytes after the last tensor")
    _verify(metadata, entries, body, who)
    tensors = {}
    for name, (dtype_name, shape, (begin, stop)) in entries.items():
        dtype = _DTYPES[dtype_name]
        a = np.frombuffer(body, dtype=dtype, count=(stop - begin) // dtype.itemsize, offset=begin)
        try:
            a = a.reshape(shape)
        except ValueError as e:  # an empty tensor whose other dimensions numpy cannot hold
            raise _fail(who, f"tensor {name!r}: shape {_short(list(shape))} ({e})") from None
        if dtype_name == "BF16":  # bfloat16 bits are the top half of a float32
            a = (a.astype(np.uint32) << 16).view(np.float32)
        elif not a.dtype.isnative or a.ctypes.data % max(a.dtype.alignment, 1):
            a = a.astype(a.dtype.newbyteorder("="))
        tensors[name] = a
    return tensors, metadata


# What a header may hold for its size, counted on the raw bytes before it is parsed (counts
# within strings included, which only makes them larger). A tensor entry such as
# "0.weight":{"dtype":"F32","shape":[8,4],"data_offsets":[0,128]} takes >= 50 bytes for 3
# containers, 5 commas and 10 quotes, and an architecture config string is sparser still, so
# these bounds pass real files; a crafted header of tiny objects is refused unparsed, and what
# is parsed costs at most about 10x its size (a dict ~100 bytes, a str ~55, a list slot 8).
_SMALL_HEADER = 1 << 20
_HEADER_DENSITY = (("containers", (b"{", b"["), 16), ("items", (b",",), 8), ("quotes", (b'"',), 4))


def _check_header_size(raw: bytes, who: str) -> None:
    """Refuses a header that would parse into far more objects than its bytes justify (a
    header under 1 MiB is left to the parser: whatever it holds costs a few dozen MB at most)."""
    n = len(raw)
    if n <= _SMALL_HEADER:
        return
    for what, tokens, bytes_each in _HEADER_DENSITY:
        count = sum(raw.count(t) for t in tokens)
        limit = 64 + n // bytes_each
        if count > limit:
            raise _fail(
                who,
                f"the header holds {count} JSON {what} in {n} bytes (at most {limit}): a "
                "crafted header, refused before parsing",
            )


def _parse_header(raw: bytes, who: str) -> dict:
    _check_header_size(raw, who)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _fail(who, f"the header is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    if not text.startswith("{"):
        raise _fail(who, "the header is not a JSON object")

    def no_duplicates(pairs):
        seen = {}
        for k, v in pairs:
            if k in seen:
                raise ModelFormatError(f"{who}: not a valid safetensors file: duplicate key {k!r}")
            seen[k] = v
        return seen

    def no_constants(token):
        raise ModelFormatError(f"{who}: not a valid safetensors file: {token} in the header")

    try:
        header = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except ModelFormatError:
        raise
    except RecursionError:
        raise _fail(who, "the header JSON is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, or an integer too long to convert
        raise _fail(who, f"the header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise _fail(who, f"the header is JSON {type(header).__name__}, not an object")
    return header


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(v) -> bool:
    return type(v) is int


def _check_entries(header: dict, who: str):
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _fail(who, "__metadata__ must be an object of strings")
    entries = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        where = f"tensor {name!r}"
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise _fail(who, f"{where}: expected an object with dtype, shape and data_offsets")
        dtype, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
        if dtype in _UNSUPPORTED:
            raise _fail(who, f"{where}: dtype {dtype} is not supported by nnframe")
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise _fail(who, f"{where}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
            raise _fail(
                who, f"{where}: shape must be a list of non-negative integers, got {shape!r}"
            )
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(o) and o >= 0 for o in offsets)
            or offsets[0] > offsets[1]
        ):
            raise _fail(who, f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end")
        if len(shape) > 64 or any(s >= 2**62 for s in shape):  # numpy's limits
            raise _fail(who, f"{where}: shape {_short(shape)} has too many or too large dimensions")
        count = 1
        for s in shape:  # Python ints: a huge product is caught, never wraps around
            count *= s
        nbytes = count * _DTYPES[dtype].itemsize
        if nbytes != offsets[1] - offsets[0]:
            raise _fail(
                who,
                f"{where}: shape {shape} of {dtype} needs {nbytes} bytes, "
                f"but data_offsets {offsets} span {offsets[1] - offsets[0]}",
            )
        entries[name] = (dtype, tuple(shape), tuple(offsets))
    return metadata, entries


def _check_offsets(entries: dict, body_len: int, who: str) -> int:
    """Tensors must tile the body exactly: sorted by offset, no overlap, no gap, no tail."""
    position = 0
    for name, (_, _, (begin, end)) in sorted(entries.items(), key=lambda kv: kv[1][2]):
        if begin < position:
            raise _fail(who, f"tensor {name!r} overlaps the previous one (offset {begin})")
        if begin > position:
            raise _fail(who, f"gap of {begin - position} bytes before tensor {name!r}")
        position = end
    if position > body_len:
        raise _fail(
            who,
            f"truncated body: the tensors need {position} bytes, the file holds {body_len}",
        )
    if position < body_len:
        raise _fail(who, f"{body_len - position} trailing bytes after the last tensor")
    return position


def _verify(metadata: dict, entries: dict, body: bytearray, who: str) -> None:
    """Checks nnframe's format version and checksums (files written by other tools carry none:
    they are accepted unverified, as the safetensors package does)."""
    if not any(k.startswith(_META_PREFIX) for k in metadata):
        return
    version = metadata.get("nnframe.format_version")
    if version is None or not (version.isascii() and version.isdigit()) or len(version) > 6:
        raise ModelFormatError(f"{who}: missing or invalid nnframe.format_version {version!r}")
    if int(version) > FORMAT_VERSION:
        raise ModelFormatError(
            f"{who}: expected format version <= {FORMAT_VERSION}, got {int(version)}. "
            "The file was written by a newer nnframe: upgrade nnframe to read it"
        )
    for key in (_SHA, _HEADER_SHA):
        if key not in metadata:
            raise ModelFormatError(f"{who}: the nnframe file has no {key} checksum")
    if hashlib.sha256(body).hexdigest() != metadata[_SHA]:
        raise ModelFormatError(
            f"{who}: checksum mismatch: the tensor bytes do not match {_SHA} (corrupted file)"
        )
    header_entries = {
        n: {"dtype": d, "shape": s, "data_offsets": o} for n, (d, s, o) in entries.items()
    }
    if _header_digest(header_entries, metadata) != metadata[_HEADER_SHA]:
        raise ModelFormatError(
            f"{who}: checksum mismatch: the header does not match {_HEADER_SHA} (corrupted file)"
        )


# ---------------------------------------------------------------------- atomic writes
def atomic_write(path, chunks) -> None:
    """Writes the byte ``chunks`` to ``path`` atomically: a temporary file in the same
    directory, fsync, ``os.replace``, fsync of the directory. On any failure (including
    KeyboardInterrupt) the temporary file is removed and the previous file is untouched.

    A symbolic link is followed (as ``open`` does): its target is replaced and the link stays.
    Temporary names fit the file system's name limit (a 255-byte name can be saved), and carry
    the writing host and process, so that each successful save removes the temporaries of the
    same target that killed saves left behind, never one a live process is still writing.
    """
    path = os.fsdecode(path)
    if not path or path.endswith(os.sep):
        raise ValueError(f"save: expected a file path, got {path!r}")
    if os.path.islink(path):  # replace the link's target, keep the link
        path = os.path.realpath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(
            errno.EISDIR,
            f"save: {path!r} is a directory; give a file path such as "
            f"{os.path.join(path, 'model.safetensors')!r}",
            path,
        )
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, f"save: no such directory: {directory!r}", path)
    prefix = _temp_prefix(os.path.basename(path), directory)
    tmp = os.path.join(directory, f"{prefix}{_HOST}-{os.getpid():x}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        raise _write_error(e, path, directory) from None
    try:
        try:  # a file being replaced keeps its permissions (a private checkpoint stays private)
            os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))
        except FileNotFoundError:
            pass
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise _write_error(e, path, directory) from None
        raise
    _fsync_directory(directory)
    _remove_stale_temporaries(directory, os.path.basename(path), prefix)


# the writing host, in temporary names: a process id is only meaningful on its own host
_HOST = (
    hashlib.sha256(os.uname().nodename.encode()).hexdigest()[:6]
    if hasattr(os, "uname")
    else "000000"
)
_TEMP_SUFFIX_BYTES = 6 + 1 + 8 + 1 + 8 + 4  # host-pid.random.tmp (pid in hex, <= 8 digits)
_LEGACY_AGE_S = 3600  # temporaries of older nnframe versions (no process id) are removed after


def _temp_prefix(name: str, directory: str) -> str:
    """``.<name, shortened to fit>.<tag>.``: the start of every temporary name of ``name``;
    ``tag`` (a hash of the full name) tells the temporaries of two long names apart."""
    try:
        limit = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    tag = hashlib.sha256(os.fsencode(name)).hexdigest()[:8]
    budget = min(limit, 255) - _TEMP_SUFFIX_BYTES - len(tag) - 3  # the dots
    short = name
    while len(os.fsencode(short)) > budget:  # shorten by characters: never split a UTF-8 one
        short = short[:-1]
    return f".{short}.{tag}."


def _remove_stale_temporaries(directory: str, name: str, prefix: str) -> None:
    """Removes temporaries of ``name`` left by killed saves: ours when their process (on this
    host) is gone; those of older versions (``.name.<12 hex>.tmp``) once an hour old."""
    legacy = re.compile(re.escape(f".{name}.") + r"[0-9a-f]{12}\.tmp")
    ours = re.compile(re.escape(prefix) + r"([0-9a-f]{6})-([0-9a-f]{1,8})\.[0-9a-f]{8}\.tmp")
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        stale = False
        m = ours.fullmatch(entry.name)
        if m:
            stale = m.group(1) == _HOST and not _alive(int(m.group(2), 16))
        elif legacy.fullmatch(entry.name):
            try:
                stale = now - entry.stat(follow_symlinks=False).st_mtime > _LEGACY_AGE_S
            except OSError:
                continue
        if stale and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
            except OSError:
                pass


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's process: alive
    return True


def _write_error(e: OSError, path: str, directory: str) -> OSError:
    reasons = {
        errno.EACCES: f"permission denied in {directory!r} (is the directory read-only?)",
        errno.EPERM: f"permission denied in {directory!r} (is the directory read-only?)",
        errno.EROFS: f"{directory!r} is on a read-only file system",
        errno.ENOSPC: "no space left on the device",
        errno.EFBIG: "the file is larger than allowed (file size limit)",
        errno.EDQUOT: "disk quota exceeded",
    }
    reason = reasons.get(e.errno, e.strerror or str(e))
    error = type(e)(
        e.errno, f"save: could not write {path!r}: {reason}; any previous file is intact", path
    )
    return error


def _fsync_directory(directory: str) -> None:
    """Makes the rename durable (a crash right after save keeps the new file)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory: the rename still happened
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- models
def save_weights(model, path) -> None:
    """Saves ``model.state_dict()`` (parameters and buffers, by dotted name) to ``path``."""
    save_file(model.state_dict(), path, {"nnframe.kind": "weights"})


def load_weights(model, path, strict: bool = True, cast: bool = False):
    """Loads weights saved by :func:`save_weights`, :func:`save` or a checkpoint (or by PyTorch
    via ``safetensors``) into ``model`` in place and returns it. Mismatched keys and shapes are reported together
    (StateDictError); a float64 file goes into a float32 model only with ``cast=True``."""
    tensors, metadata = load_file(path)
    if metadata.get("nnframe.kind") == "checkpoint":  # the model's part of a checkpoint
        tensors = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    if not cast:
        check_kinds(model, tensors, f"load_weights({os.fspath(path)!r})")
    model.load_state_dict(tensors, strict=strict, cast=cast)
    return model


def check_kinds(model, state: dict, who: str) -> None:
    """Integer or bool tensors do not go silently into float parameters and buffers (as a
    float64 file does not go into a float32 model): ``cast=True`` asks for the conversion."""
    own = model.state_dict()
    wrong = [
        f"{k}: expected dtype {own[k].dtype}, got {v.dtype}"
        for k, v in state.items()
        if k in own and own[k].dtype.kind == "f" and np.asarray(v).dtype.kind != "f"
    ]
    if wrong:
        raise ModelFormatError(f"{who}: {'; '.join(wrong[:5])} (pass cast=True to convert)")


def save(model, path) -> None:
    """Saves a whole model: its architecture (JSON config) and its weights, in one file.

    The config is checked at once by rebuilding the architecture (without touching any random
    generator's state), so a model that could not be loaded back fails here, not later.
    """
    from nnframe.io.config import check_rebuild, get_config

    _check_no_late_ties(model)
    config = get_config(model)
    check_rebuild(model, config)
    meta = {"nnframe.kind": "model", "nnframe.config": json.dumps(config)}
    save_file(model.state_dict(), path, meta)


def _check_no_late_ties(model) -> None:
    """A Parameter shared by two layers after construction (``m[2].weight = m[0].weight``)
    cannot come back from the config, which records constructor arguments only: say so."""
    first: dict[int, str] = {}
    for prefix, module in model.named_modules():
        for name, p in module._own_parameters():
            full = f"{prefix}.{name}" if prefix else name
            if id(p) in first and first[id(p)] != full:
                if _ties_in_constructor(model):  # the config rebuilds the same ties
                    return
                raise ValueError(
                    f"save: expected parameters tied by a layer's constructor, got {full!r} "
                    f"tied to {first[id(p)]!r} after construction. Tie them in the __init__ of a "
                    "registered layer (nnframe.register_layer), or save the weights with "
                    "nnframe.save_weights and build the model in code"
                )
            first.setdefault(id(p), full)


def _ties_in_constructor(model) -> bool:
    """True when rebuilding ``model`` from its config gives the same tied parameters."""
    from nnframe.core.random import default_rng
    from nnframe.io.config import from_config, get_config

    rng = default_rng()
    state = rng.bit_generator.state
    try:
        rebuilt = from_config(get_config(model))
    except (ModelFormatError, TypeError, ValueError):
        return True  # check_rebuild reports it
    finally:
        rng.bit_generator.state = state
    return list(rebuilt.state_dict()) == list(model.state_dict())


def load(path, *, registry=None, device=None):
    """Loads a model saved by :func:`save` (or the model of a checkpoint): rebuilds it from its
    config (layer names are looked up in the registry; see :func:`nnframe.register_layer`) and
    loads its weights.

    The model comes back in **eval mode**, ready for inference (Dropout off, BatchNorm on its
    running statistics); ``Trainer.fit`` (or ``model.train()``) switches it to training. The
    rule: a function that builds a new model returns it in eval mode (``load``,
    ``load_checkpoint`` without a model); one that loads into a model you pass
    (``load_weights``, ``load_state_dict``, ``load_checkpoint(path, model)``,
    ``fit(resume_from=)``) leaves its mode as it was. ``device`` (``"cuda"``) moves it there
    (the file is the same whatever device the model was saved from)."""
    tensors, metadata = load_file(path)
    prefix = "model/" if metadata.get("nnframe.kind") == "checkpoint" else ""
    model = model_from_file_parts(
        tensors, metadata, os.fspath(path), registry=registry, prefix=prefix
    ).eval()
    return model if device is None else model.to(device)


def _match_dtypes(model, state: dict) -> None:
    """Casts each layer to the float dtype its stored tensors have (a model whose layers were
    moved to different dtypes, ``model[2].to(np.float64)``, loads as it was saved). Layers are
    visited outermost first, so an inner layer's own dtype wins over its container's."""
    float_dtypes = {v.dtype for v in state.values() if v.dtype.kind == "f"}
    if len(float_dtypes) == 1 and model.dtype != next(iter(float_dtypes)):
        model.to(next(iter(float_dtypes)))  # the model was saved after .to(dtype)
    if len(float_dtypes) <= 1:
        return
    owner = {}  # dotted tensor name -> (module name, module)
    for prefix, module in model.named_modules():
        for name, _ in module.named_parameters():
            owner[f"{prefix}.{name}" if prefix else name] = (prefix, module)
        for name, _ in module.named_buffers():
            owner[f"{prefix}.{name}" if prefix else name] = (prefix, module)
    # the innermost module owning each tensor (named_modules is outermost first)
    stored: dict[str, tuple] = {}
    for key, value in state.items():
        if key in owner and value.dtype.kind == "f":
            prefix, module = owner[key]
            stored.setdefault(prefix, (module, set()))[1].add(value.dtype)
    for _, (module, dtypes) in sorted(
        stored.items(), key=lambda kv: kv[0].count(".") + bool(kv[0])
    ):
        if len(dtypes) == 1:
            dtype = next(iter(dtypes))
            if any(p.data.dtype != dtype for _, p in module.named_parameters()):
                module.to(dtype)


def model_from_file_parts(tensors, metadata, path: str, registry=None, prefix: str = ""):
    from nnframe.core.module import StateDictError
    from nnframe.io.config import from_config

    text = metadata.get("nnframe.config")
    if text is None:
        raise ModelFormatError(
            f"load: {path!r} holds weights only (no architecture config): build the model "
            "and call nnframe.load_weights(model, path)"
        )
    try:
        config = json.loads(text)
    except (ValueError, RecursionError):
        raise ModelFormatError(
            f"load: {path!r}: the nnframe.config metadata is not valid JSON"
        ) from None
    model = from_config(config, registry=registry)
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    _match_dtypes(model, state)
    try:
        model.load_state_dict(state)
    except StateDictError as e:
        raise ModelFormatError(
            f"load: {path!r}: the weights do not match the architecture in the config: {e}"
        ) from None
    return model
