"""A small reader/writer for the safetensors format (no pickle, no dependency).

Layout: 8 bytes little-endian u64 N, then N bytes of UTF-8 JSON
    {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
     "__metadata__": {"key": "string value", ...}}
padded with spaces to a multiple of 8, then the raw little-endian tensor bytes; offsets are
relative to the start of that data section and the tensors tile it without gaps or overlap.
Files written here are readable by the `safetensors` package and vice versa (BF16 tensors
are widened to float32 on read: NumPy has no bfloat16).
"""
from __future__ import annotations

import json
import os
import struct

import numpy as np

from .atomic import atomic_write

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
_NAMES = {np.dtype(t): name for name, t in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """A malformed or unsupported safetensors file."""


def _dtype_name(name: str, a: np.ndarray) -> str:
    try:
        return _NAMES[a.dtype.newbyteorder("=")]
    except KeyError:
        raise TypeError(f"safetensors: tensor {name!r} has unsupported dtype {a.dtype} "
                        f"(supported: {', '.join(str(np.dtype(t)) for t in _DTYPES.values())})") from None


def _write_tensor(f, a: np.ndarray) -> None:
    """Raw little-endian bytes of one tensor (a hook the atomic-write test interrupts)."""
    if a.size:
        f.write(memoryview(a).cast("B"))


def save_file(tensors: dict, path, metadata: dict | None = None) -> None:
    """Write `tensors` (name → array) to `path` atomically; `metadata` values must be strings."""
    header, arrays, offset = {}, [], 0
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"safetensors: metadata must map str to str, got {k!r}: {type(v).__name__}")
        header["__metadata__"] = dict(metadata)
    for name, a in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"safetensors: invalid tensor name {name!r}")
        a = np.asarray(a)
        dt = _dtype_name(name, a)
        a = np.require(a.astype(a.dtype.newbyteorder("<"), copy=False), requirements="C")  # keeps 0-d shape
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        arrays.append(a)
        offset += a.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    with atomic_write(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for a in arrays:
            _write_tensor(f, a)


def read_header(path) -> tuple[dict, dict, int]:
    """(tensor entries name → {dtype, shape, data_offsets}, metadata, byte offset of the data)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"safetensors: no such file: {path}")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise SafetensorsError(f"safetensors: {path}: file too short ({size} bytes) for the header length")
        (n,) = struct.unpack("<Q", raw)
        if n > _MAX_HEADER or 8 + n > size:
            raise SafetensorsError(f"safetensors: {path}: header length {n} is invalid for a {size}-byte file")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SafetensorsError(f"safetensors: {path}: header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"safetensors: {path}: header must be a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data_len = size - 8 - n
    spans = []
    for name, e in header.items():
        try:
            dt, shape, (b, end) = e["dtype"], [int(s) for s in e["shape"]], e["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"safetensors: {path}: malformed entry for tensor {name!r}: {e!r}") from None
        if dt not in _DTYPES and dt != "BF16":
            raise SafetensorsError(f"safetensors: {path}: tensor {name!r} has unsupported dtype {dt!r}")
        itemsize = 2 if dt == "BF16" else np.dtype(_DTYPES[dt]).itemsize
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if end - b != count * itemsize or b < 0 or end > data_len:
            raise SafetensorsError(f"safetensors: {path}: tensor {name!r} (dtype {dt}, shape {tuple(shape)}) has "
                                   f"data_offsets [{b}, {end}] inconsistent with its size or the file's {data_len} data bytes")
        spans.append((b, end, name))
    pos = 0
    for b, end, name in sorted(spans):
        if b != pos:
            raise SafetensorsError(f"safetensors: {path}: tensor {name!r} starts at {b}, expected {pos} "
                                   "(tensors must tile the data section without gaps or overlap)")
        pos = end
    return header, metadata, 8 + n


def _read(f, base: int, e: dict) -> np.ndarray:
    b, end = e["data_offsets"]
    f.seek(base + b)
    raw = f.read(end - b)
    shape = tuple(e["shape"])
    if e["dtype"] == "BF16":  # widen: bfloat16 is the top half of a float32
        u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return u.view(np.float32).reshape(shape)
    dt = np.dtype(_DTYPES[e["dtype"]]).newbyteorder("<")
    return np.frombuffer(raw, dtype=dt).astype(dt.newbyteorder("="), copy=True).reshape(shape)


def load_file(path, names=None) -> dict:
    """name → array (writable copies, native byte order), in the file's data order; `names`
    restricts the read to those tensors (KeyError naming a missing one)."""
    header, _, base = read_header(path)
    if names is None:
        names = sorted(header, key=lambda k: header[k]["data_offsets"][0])
    else:
        for name in names:
            if name not in header:
                raise KeyError(f"safetensors: {os.fspath(path)} has no tensor {name!r}")
    with open(path, "rb") as f:
        return {name: _read(f, base, header[name]) for name in names}


def read_metadata(path) -> dict:
    return read_header(path)[1]
