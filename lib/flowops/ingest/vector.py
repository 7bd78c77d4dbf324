"""Small vectorised helpers over Arrow arrays, shared by the parse, identification and pseudonymisation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def repeated(text: str, count: int) -> pa.StringArray:
    """`count` copies of `text` as one Arrow array, built from two buffers (no Python object per value)."""
    data = text.encode("utf-8")
    offsets = np.arange(count + 1, dtype=np.int32) * len(data)
    return pa.Array.from_buffers(pa.string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(data * count)])


def per_distinct(columns: list[pa.Array], answer: Callable[[tuple[str, ...]], tuple]) -> tuple[np.ndarray, list]:
    """Answer each distinct combination of `columns` once: returns, per row, the index of its combination in the
    returned answers."""
    encoded = [pc.dictionary_encode(pc.fill_null(column, "")) for column in columns]
    codes = np.stack([e.indices.to_numpy(zero_copy_only=False).astype(np.int64) for e in encoded], axis=1)
    sizes = [max(len(e.dictionary), 1) for e in encoded]
    if np.prod(np.array(sizes, dtype=float)) < 2 ** 62:  # one number per combination: a 1-d unique, much faster
        combined = np.zeros(len(codes), np.int64)
        for position, size in enumerate(sizes):
            combined = combined * size + codes[:, position]
        _, first, index = np.unique(combined, return_index=True, return_inverse=True)
        distinct = codes[first]
    else:
        distinct, index = np.unique(codes, axis=0, return_inverse=True)
    values = [e.dictionary.to_pylist() for e in encoded]
    answers = [answer(tuple(values[j][row[j]] for j in range(len(columns)))) for row in distinct]
    return index.reshape(-1), answers
