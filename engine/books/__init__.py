"""Plain-Python engine of the books pipeline: summaries, embeddings, index writers."""
