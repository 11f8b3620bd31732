"""Bedrock summaries and embeddings through real boto3 clients against a local Bedrock
runtime API (local_services/bedrock_server.py): one call or map-reduce, throttling retried
and counted, permanent errors final and clear, credentials kept out of messages."""

import logging
import re
import types

import boto3
import botocore.endpoint
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.books.bedrock import (
    BedrockEmbedder,
    BedrockError,
    BedrockSummarizer,
    BedrockThrottledError,
    backoff_delay,
    estimate_tokens,
    redact_credentials,
    split_into_chunks,
)
from local_services.bedrock_server import bedrock_server, fake_summary

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN = "amazon.titan-embed-text-v2:0"
# AWS's documented example key pair: shaped like real credentials, granting nothing.
EXAMPLE_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def client_for(server, key_id="test", secret="test", **config):
    """A real bedrock-runtime client on the local server, botocore's own retries off."""
    config.setdefault("retries", {"total_max_attempts": 1, "mode": "standard"})
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(**config),
    )


def paragraph(i: int) -> str:
    return f"Paragraph {i} opens here. " + "The river bends past the old mill and the town wakes slowly. " * 4


def make_book(paragraphs: int) -> str:
    return "\n\n".join(paragraph(i) for i in range(paragraphs))


def first_paragraph_numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"Paragraph (\d+) opens here\.", text)]


@pytest.fixture
def sleeps():
    """Backoff delays asked for, instead of sleeping them."""
    return []


# ------------------------------------------------------------------------------ summaries


def test_short_book_is_one_converse_call(sleeps):
    book = make_book(5)
    with bedrock_server() as server:
        summarizer = BedrockSummarizer(
            client_for(server), price_per_1k_input=0.25, price_per_1k_output=1.25, sleep=sleeps.append
        )
        result = summarizer.summarize(book)
        (record,) = server.stats.converse
    assert server.stats.count("converse", HAIKU) == 1  # the model id survived the %3A in the path
    assert result.calls == 1 and result.throttled == 0 and sleeps == []
    assert result.text == " ".join(f"Paragraph {i} opens here." for i in range(5))
    # Tokens as the model reported them, and the cost from them.
    assert result.input_tokens == record.input_tokens > 0
    assert result.output_tokens == record.output_tokens > 0
    assert result.cost_usd == pytest.approx(result.input_tokens / 1000 * 0.25 + result.output_tokens / 1000 * 1.25)
    assert (record.max_tokens, record.temperature) == (400, 0)
    assert "summar" in record.system and record.prompt_head.startswith("Paragraph 0 opens here.")
    assert summarizer.name == f"bedrock:{HAIKU}" and summarizer.version == HAIKU


def test_book_longer_than_the_context_is_map_reduced_within_it(sleeps):
    book = make_book(120)
    context = 1500
    with bedrock_server(context_tokens=context, latency_s=0.02) as server:
        summarizer = BedrockSummarizer(
            client_for(server), max_input_tokens=context, chunk_tokens=1000, max_concurrency=3, sleep=sleeps.append
        )
        chunks = split_into_chunks(book, summarizer.chunk_tokens)
        result = summarizer.summarize(book)
        records = list(server.stats.converse)
        assert server.stats.error_count() == 0  # no call was rejected as too long
        assert 2 <= server.stats.max_in_flight <= 3  # chunks in parallel, within the bound
    assert len(chunks) >= 4
    assert result.calls == len(chunks) + 1 == len(records)  # one per chunk, one merge
    assert all(r.input_tokens <= context for r in records)
    assert result.input_tokens == sum(r.input_tokens for r in records)
    # Chunks are cut between paragraphs: each begins with one, and the merge keeps their order.
    starts = [first_paragraph_numbers(chunk)[0] for chunk in chunks]
    assert all(chunk.startswith("Paragraph ") for chunk in chunks)
    assert first_paragraph_numbers(result.text) == starts
    assert starts[0] == 0 and starts == sorted(starts)
    parts = sorted(r.system for r in records if "part " in r.system)
    assert len(parts) == len(chunks) and f"part 1 of {len(chunks)}" in " ".join(parts)
    assert sum("summaries of consecutive parts" in r.system for r in records) == 1


def test_the_server_rejects_what_the_chunking_avoids(sleeps):
    """The control for the test above: sent whole, the same book is refused, once, finally."""
    book = make_book(120)
    with bedrock_server(context_tokens=1500) as server:
        summarizer = BedrockSummarizer(client_for(server), max_input_tokens=100_000, sleep=sleeps.append)
        with pytest.raises(BedrockError) as raised:
            summarizer.summarize(book)
        assert server.stats.count("converse") == 1  # no retry storm
    assert sleeps == []
    error = raised.value
    assert not isinstance(error, BedrockThrottledError)
    assert (error.code, error.http_status, error.model_id) == ("ValidationException", 400, HAIKU)
    assert HAIKU in str(error) and "ValidationException" in str(error) and "too long" in str(error)


def test_merges_recurse_while_the_joined_summaries_are_still_too_long(sleeps):
    book = make_book(400)
    context = 700
    with bedrock_server(context_tokens=context) as server:
        summarizer = BedrockSummarizer(
            client_for(server), max_input_tokens=context, chunk_tokens=600, max_output_tokens=100, sleep=sleeps.append
        )
        chunks = split_into_chunks(book, summarizer.chunk_tokens)
        result = summarizer.summarize(book)
        records = list(server.stats.converse)
    assert server.stats.error_count() == 0
    assert all(r.input_tokens <= context for r in records)
    merge_groups = [r for r in records if "group " in r.system]
    assert merge_groups, "expected a second level of chunked merges"
    assert result.calls == len(records) == len(chunks) + len(merge_groups) + 1
    numbers = first_paragraph_numbers(result.text)
    assert numbers[0] == 0 and numbers == sorted(numbers)


def test_throttled_requests_are_retried_with_backoff(sleeps):
    book = make_book(5)
    with bedrock_server(throttle_next=2, unavailable_next=1) as server:
        summarizer = BedrockSummarizer(client_for(server), sleep=sleeps.append)
        result = summarizer.summarize(book)
        assert server.stats.count("converse") == 4
        assert server.stats.error_count("ThrottlingException") == 2
        assert server.stats.error_count("ServiceUnavailableException") == 1
    assert result.text == " ".join(f"Paragraph {i} opens here." for i in range(5))
    assert result.calls == 1 and result.throttled == 3
    assert len(sleeps) == 3  # injected: nothing really slept
    assert all(2 ** (k - 1) / 2 <= s <= 2 ** (k - 1) for k, s in enumerate(sleeps, start=1))  # 1s, 2s, 4s ceilings


def test_throttling_during_map_reduce_changes_nothing_but_the_counts(sleeps):
    book = make_book(120)
    with bedrock_server(context_tokens=1500) as server:
        expected = BedrockSummarizer(client_for(server), max_input_tokens=1500, chunk_tokens=1000).summarize(book)
    faults = {"throttle_fraction": 0.4, "fail_next": ["ModelNotReadyException"], "seed": 7}
    with bedrock_server(context_tokens=1500, **faults) as server:
        summarizer = BedrockSummarizer(
            client_for(server), max_input_tokens=1500, chunk_tokens=1000, max_concurrency=4, sleep=sleeps.append
        )
        result = summarizer.summarize(book)
        refused = server.stats.error_count()
    assert (result.text, result.calls, result.input_tokens, result.output_tokens) == (
        expected.text,
        expected.calls,
        expected.input_tokens,
        expected.output_tokens,
    )
    assert result.throttled == refused == len(sleeps) > 1


def test_read_timeouts_are_retried(sleeps):
    with bedrock_server(stall_next=1, stall_s=1.0) as server:
        summarizer = BedrockSummarizer(client_for(server, read_timeout=0.2, connect_timeout=2), sleep=sleeps.append)
        result = summarizer.summarize(make_book(2))
    assert result.throttled == 1 and len(sleeps) == 1 and result.text.startswith("Paragraph 0")


def test_endless_throttling_gives_up_after_max_attempts(sleeps):
    with bedrock_server(throttle_models={HAIKU}) as server:
        summarizer = BedrockSummarizer(client_for(server), max_attempts=3, sleep=sleeps.append)
        with pytest.raises(BedrockThrottledError, match="still refused after 3 attempts") as raised:
            summarizer.summarize(make_book(2))
        assert server.stats.count("converse") == 3
    assert len(sleeps) == 2 and HAIKU in str(raised.value)


def test_a_failing_chunk_cancels_the_chunks_not_yet_sent(sleeps):
    book = make_book(120)
    with bedrock_server(context_tokens=1500, fail_next=["AccessDeniedException"], latency_s=0.1) as server:
        summarizer = BedrockSummarizer(
            client_for(server),
            max_input_tokens=1500,
            chunk_tokens=500,
            max_output_tokens=200,
            max_concurrency=2,
            sleep=sleeps.append,
        )
        n_chunks = len(split_into_chunks(book, summarizer.chunk_tokens))
        with pytest.raises(BedrockError, match="AccessDeniedException"):
            summarizer.summarize(book)
        sent = server.stats.count("converse")
    # The failed one, the other worker's call in flight, and at most one more that the failed
    # worker picked up before the failure was seen (the 0.1 s latency holds the rest back).
    assert n_chunks >= 8 and sent <= 3
    assert sleeps == []


def test_botocore_retries_left_on_are_counted_and_warned_about(sleeps, monkeypatch, caplog):
    # botocore's max_attempts=1 means one *retry*: two attempts. Its backoff sleep is stubbed.
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    with bedrock_server(throttle_next=1) as server, caplog.at_level(logging.WARNING, "engine.books.bedrock"):
        summarizer = BedrockSummarizer(client_for(server, retries={"max_attempts": 1}), sleep=sleeps.append)
        result = summarizer.summarize(make_book(2))
        assert server.stats.count("converse") == 2
    assert "retries by itself" in caplog.text
    assert result.throttled == 1 and sleeps == []  # botocore's retry, counted; none of ours


def test_settings_that_cannot_converge_are_refused():
    with pytest.raises(ValueError, match="too little room"):
        BedrockSummarizer(object(), max_input_tokens=1000, chunk_tokens=700, max_output_tokens=400)
    with pytest.raises(ValueError, match="empty"):
        BedrockSummarizer(object()).summarize("  \n")


# ------------------------------------------------------------------------------ chunking


def test_chunks_cut_at_paragraphs_then_sentences_then_spaces():
    book = make_book(10)
    chunks = split_into_chunks(book, estimate_tokens(paragraph(0) + "\n\n") * 3)  # paragraphs 0-9: one size
    assert "".join(chunks) == book
    assert all(c.startswith("Paragraph") for c in chunks) and len(chunks) == 4  # 3 + 3 + 3 + 1 paragraphs
    one_long_paragraph = " ".join(f"Sentence {i} is here." for i in range(100))
    chunks = split_into_chunks(one_long_paragraph, 20)
    assert "".join(chunks) == one_long_paragraph
    assert all(re.fullmatch(r"(Sentence \d+ is here\. ?)+", c) for c in chunks)
    no_spaces = "x" * 1000
    assert "".join(split_into_chunks(no_spaces, 10)) == no_spaces


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.sampled_from("ab .!\n\u00e9\u4e2d\U0001f600"), max_size=400), max_tokens=st.integers(2, 60))
def test_chunks_give_the_text_back_and_fit(text, max_tokens):
    chunks = split_into_chunks(text, max_tokens)
    assert "".join(chunks) == text
    assert all(estimate_tokens(c) <= max_tokens for c in chunks)
    assert all(chunks) and (chunks or not text)


def test_the_estimate_errs_high_against_a_word_count_and_counts_cjk():
    english = make_book(20)
    assert estimate_tokens(english) >= len(re.findall(r"\w+|[^\w\s]", english))
    assert estimate_tokens("\u4e2d" * 100) >= 80  # chars/4 would say 25


def test_backoff_grows_and_is_capped():
    for attempt in range(1, 12):
        ceiling = min(30.0, 2 ** (attempt - 1))
        assert ceiling / 2 <= backoff_delay(attempt) <= ceiling


def test_the_fake_summary_is_first_sentences():
    assert fake_summary("One. Two.\n\nThree! Four.", 100) == ("One. Three!", "end_turn")
    assert fake_summary("abcdefgh.", 1) == ("abcd", "max_tokens")


# ------------------------------------------------------------------------------ embeddings


TEXTS = [f"book {i}: a story about rivers, mills and towns number {i}" for i in range(16)]


def test_embeddings_shape_dtype_determinism_and_norm(sleeps):
    with bedrock_server() as server:
        embedder = BedrockEmbedder(client_for(server), dimensions=256, sleep=sleeps.append)
        first = embedder.embed(TEXTS)
        again = BedrockEmbedder(client_for(server), dimensions=256).embed(TEXTS[::-1])
        assert server.stats.count("invoke", TITAN) == 32
    assert first.shape == (16, 256) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again[::-1])  # deterministic, and rows in input order
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    assert len({row.tobytes() for row in first}) == 16
    assert embedder.calls == 16 and embedder.throttled == 0 and sleeps == []
    assert embedder.input_tokens == sum(len(re.findall(r"\w+|[^\w\s]", t)) for t in TEXTS)
    assert (embedder.name, embedder.dimensions) == (f"bedrock:{TITAN}", 256)
    assert embedder.version == f"{TITAN}/256/normalized"


def test_embedding_requests_stay_within_the_concurrency_bound():
    with bedrock_server(latency_s=0.05) as server:
        BedrockEmbedder(client_for(server), dimensions=256, max_concurrency=3).embed(TEXTS)
        assert 2 <= server.stats.max_in_flight <= 3


def test_embedding_throttling_is_retried(sleeps):
    with bedrock_server() as server:
        expected = BedrockEmbedder(client_for(server), dimensions=512).embed(TEXTS)
    with bedrock_server(throttle_fraction=0.3, unavailable_next=1, seed=3) as server:
        embedder = BedrockEmbedder(client_for(server), dimensions=512, sleep=sleeps.append)
        vectors = embedder.embed(TEXTS)
        refused = server.stats.error_count()
    np.testing.assert_array_equal(vectors, expected)
    assert embedder.throttled == refused == len(sleeps) > 1
    assert embedder.calls == 16


def test_embeddings_unnormalized_empty_input_and_dimensions():
    with bedrock_server() as server:
        raw = BedrockEmbedder(client_for(server), dimensions=256, normalize=False).embed(TEXTS[:3])
        assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
        assert BedrockEmbedder(client_for(server)).embed([]).shape == (0, 1024)
        with pytest.raises(ValueError, match="empty"):
            BedrockEmbedder(client_for(server)).embed(["fine", " "])
        with pytest.raises(ValueError, match="256, 512, 1024"):
            BedrockEmbedder(client_for(server), dimensions=384)
        # The server refuses what the real service refuses, in its wire format.
        with pytest.raises(ClientError) as raised:
            body = '{"inputText": "x", "dimensions": 384}'
            client_for(server).invoke_model(modelId=TITAN, body=body, contentType="application/json")
        assert raised.value.response["Error"]["Code"] == "ValidationException"


# ------------------------------------------------------------------------------ credentials


def test_credentials_never_reach_error_messages(sleeps):
    with bedrock_server(deny_models={HAIKU, TITAN}) as server:
        client = client_for(server, key_id=EXAMPLE_KEY_ID, secret=EXAMPLE_SECRET)
        # The control: the service's own message does carry the key id.
        with pytest.raises(ClientError) as raw:
            client.converse(modelId=HAIKU, messages=[{"role": "user", "content": [{"text": "hi"}]}])
        assert EXAMPLE_KEY_ID in str(raw.value)
        errors = []
        for run in (
            lambda: BedrockSummarizer(client, sleep=sleeps.append).summarize(make_book(2)),
            lambda: BedrockEmbedder(client, sleep=sleeps.append).embed(["hi"]),
        ):
            with pytest.raises(BedrockError) as raised:
                run()
            errors.append(raised.value)
        assert server.stats.count() == 3  # the control, then one each: denials are final
    assert sleeps == []
    for error in errors:
        shown = f"{error} {error!r} {error.args}"
        assert EXAMPLE_KEY_ID not in shown and EXAMPLE_SECRET not in shown
        assert "AccessDeniedException" in shown and error.model_id in shown
        assert error.__cause__ is None and error.__suppress_context__  # no raw error in the traceback


def test_redaction_covers_key_ids_scopes_and_signatures():
    scope = "20240101/us-east-1/bedrock/aws4_request"
    message = f"Credential={EXAMPLE_KEY_ID}/{scope}, Signature=abc123, also mykey/{scope}"
    redacted = redact_credentials(message)
    assert EXAMPLE_KEY_ID not in redacted and "abc123" not in redacted and "mykey" not in redacted
