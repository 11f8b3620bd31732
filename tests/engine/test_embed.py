"""The local embedder: copies of the model in threads give the vectors one model gives."""

import numpy as np
import pytest

from engine.books.embed import DIMENSIONS, LocalEmbedder, model_copies

TEXTS = [f"A keeper of lighthouse number {i} writes to the harbour master about storm {i % 7}." for i in range(40)]


def test_two_threads_embed_as_one_does_in_the_same_order():
    one, two = LocalEmbedder(threads=1), LocalEmbedder(threads=2, batch_size=8)
    alone, side_by_side = one.embed(TEXTS), two.embed(TEXTS)
    assert alone.shape == side_by_side.shape == (len(TEXTS), DIMENSIONS)
    assert side_by_side.dtype == np.float32
    np.testing.assert_allclose(side_by_side, alone, atol=1e-5)  # the same rows, not a reordering
    np.testing.assert_allclose(np.linalg.norm(alone, axis=1), 1.0, atol=1e-5)
    assert len(model_copies(2)) == 2 and model_copies(2)[0] is not model_copies(2)[1]
    assert (one.calls, two.calls) == (len(TEXTS), len(TEXTS))


def test_a_few_texts_with_many_threads_and_no_texts_at_all():
    embedder = LocalEmbedder(threads=4)
    assert embedder.embed(TEXTS[:3]).shape == (3, DIMENSIONS)
    assert embedder.embed([]).shape == (0, DIMENSIONS)


def test_an_impossible_number_of_threads_is_refused():
    with pytest.raises(ValueError, match="between 1 and 64"):
        model_copies(0)
