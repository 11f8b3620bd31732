"""Between numpy and Arrow without copies: numpy arrays as Arrow arrays (not through
`pa.array`), and Arrow strings' buffers as numpy arrays.

`pa.array(ndarray)` asks whether the array is a masked one, and numpy 2 loads `numpy.ma`
on that first question: 1.3 MB and about 10 ms in every run process, during its import.
The arrays here are plain, so their buffers are wrapped as they are (no copy either)."""

import numpy as np
import pyarrow as pa


def arrow_array(values: np.ndarray) -> pa.Array:
    """A 1-d numpy array of numbers as an Arrow array of the same type, sharing its memory."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def string_offsets_and_bytes(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string or large_string array's value offsets (len + 1, into the bytes) and its
    UTF-8 bytes, as numpy views of its buffers: for byte-wise work over every cell at once.
    The bytes are one zero byte when the array holds no text."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise TypeError(f"a string array, not {column.type}")
    width = np.int64 if pa.types.is_large_string(column.type) else np.int32
    _, offsets_buffer, data_buffer = column.buffers()[:3]
    item = np.dtype(width).itemsize
    offsets = np.frombuffer(offsets_buffer, width, len(column) + 1, column.offset * item)
    data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None and data_buffer.size else np.zeros(1, np.uint8)
    return offsets, data
