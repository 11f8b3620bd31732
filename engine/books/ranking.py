"""Hybrid search's fusion, shared by the embedded index and OpenSearch."""

from collections.abc import Iterable, Sequence

RRF_K = 60  # the constant of reciprocal rank fusion (Cormack et al.); damps the top ranks' weight


def reciprocal_rank_fusion(rankings: Iterable[Sequence[tuple[str, float]]], k: int) -> list[tuple[str, float]]:
    """Fuse ranked lists by sum(1 / (RRF_K + rank)): robust to the lists' different score
    scales; ties go to the smaller id, for stable output."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, (doc_id, _score) in enumerate(ranking, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))[:k]
