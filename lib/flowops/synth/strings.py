"""Vectorised string building: numbers to fixed-width digits, Luhn, and '|'-joined lines.

Everything here works on whole numpy / pyarrow arrays so the generator never loops per record.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def digit_matrix(values: np.ndarray, width: int) -> np.ndarray:
    """Decimal digits of non-negative ints as an (n, width) uint8 matrix, most significant first."""
    v = np.asarray(values, dtype=np.uint64).copy()
    out = np.empty((v.size, width), dtype=np.uint8)
    for i in range(width - 1, -1, -1):
        out[:, i] = (v % 10).astype(np.uint8)
        v //= 10
    return out


def luhn_check_digit(digits: np.ndarray) -> np.ndarray:
    """Luhn check digit for each row of an (n, k) digit matrix (the payload, no check digit)."""
    d = digits.astype(np.int64)
    k = d.shape[1]
    # Doubling starts from the rightmost payload digit, because the check digit will follow it.
    double = (np.arange(k)[::-1] % 2) == 0
    dd = np.where(double, d * 2, d)
    dd = np.where(dd > 9, dd - 9, dd)
    return ((10 - dd.sum(axis=1) % 10) % 10).astype(np.uint8)


def ascii_matrix_to_array(chars: np.ndarray) -> pa.StringArray:
    """An (n, w) uint8 matrix of ASCII codes to a pyarrow string array of width-w strings."""
    n, w = chars.shape
    data = np.ascontiguousarray(chars).tobytes()
    offsets = np.arange(0, (n + 1) * w, w, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))


def digits_to_array(digits: np.ndarray) -> pa.StringArray:
    """A digit matrix to a pyarrow string array."""
    return ascii_matrix_to_array(digits + ord("0"))


def hex_array(values: np.ndarray, width: int) -> pa.StringArray:
    """Unsigned ints as lowercase zero-padded hex strings of ``width`` characters (width <= 16)."""
    v = np.asarray(values, dtype=np.uint64).copy()
    out = np.empty((v.size, width), dtype=np.uint8)
    for i in range(width - 1, -1, -1):
        out[:, i] = _HEX[(v & np.uint64(15)).astype(np.int64)]
        v >>= np.uint64(4)
    return ascii_matrix_to_array(out)


def int_array(values: np.ndarray) -> pa.Array:
    """Integers as decimal strings."""
    return pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string())


def take(table: pa.Array, idx: np.ndarray) -> pa.Array:
    """Pick ``table[idx]`` for an index array."""
    return table.take(pa.array(np.asarray(idx, dtype=np.int64)))


def join_fields(columns: list[pa.Array]) -> pa.BinaryArray:
    """Join field columns with '|' and end every line with '\\n'; the result is binary.

    Binary rather than string so that deliberately non-UTF-8 fields can pass through.
    """
    cols = [c if pa.types.is_binary(c.type) else pc.cast(c, pa.binary()) for c in columns]
    cols[-1] = pc.binary_join_element_wise(cols[-1], pa.scalar(b"\n"), pa.scalar(b""))
    return pc.binary_join_element_wise(*cols, pa.scalar(b"|"))


def concat_bytes(lines: pa.BinaryArray) -> bytes:
    """The concatenated bytes of a binary array (no separators)."""
    if len(lines) == 0:
        return b""
    first = lines.offset
    off = np.frombuffer(lines.buffers()[1], dtype=np.int32)[first:first + len(lines) + 1]
    return memoryview(lines.buffers()[2])[off[0]:off[-1]].tobytes()
