"""numpy arrays handed to Arrow without `pa.array`.

`pa.array(ndarray)` asks whether the array is a masked one, and numpy 2 loads `numpy.ma`
on that first question: 1.3 MB and about 10 ms in every run process, during its import.
The arrays here are plain, so their buffers are wrapped as they are (no copy either)."""

import numpy as np
import pyarrow as pa


def arrow_array(values: np.ndarray) -> pa.Array:
    """A 1-d numpy array of numbers as an Arrow array of the same type, sharing its memory."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])
