"""Amazon Bedrock clients of the books pipeline: book summaries through the Converse API
(map-reduce for books longer than the model's context) and Titan text embeddings through
InvokeModel. Plain Python around a boto3 ``bedrock-runtime`` client that the caller builds.

Build the client with botocore's own retries off, so that throttling is backed off and
counted here, once, rather than inside botocore as well::

    from botocore.config import Config
    client = boto3.client(
        "bedrock-runtime",
        region_name=...,           # endpoint_url=... for a local or private endpoint
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, max_pool_connections=16),
    )

Note that botocore's ``retries={"max_attempts": N}`` counts *retries*: ``max_attempts=1``
is two attempts. A client whose botocore retries are on still works: the retries botocore
made (``ResponseMetadata.RetryAttempts``) are added to the ``throttled`` counts, and a
warning says so. ``max_pool_connections`` should be at least ``max_concurrency``, or urllib3
discards and reopens connections.

Token estimate (deciding whether a book fits the model's context, and sizing chunks): UTF-8
bytes / 3.5, rounded up. Claude's tokenizer gives about 3.5-4 characters per token for
English prose, so this errs high (the safe side: an underestimate is a rejected request);
for CJK text or emoji (3-4 bytes a character, about one token a character) it stays close,
where characters / 4 would be four times too low. It costs one ``encode``. The model's
real counts (``usage``) are what the results report.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

log = logging.getLogger(__name__)

BYTES_PER_TOKEN = 3.5

# Errors worth another attempt: the service refused or could not serve this request now.
TRANSIENT_ERROR_CODES = frozenset(
    {
        "ThrottlingException",
        "ServiceUnavailableException",
        "ModelNotReadyException",
        "ModelTimeoutException",
        "InternalServerException",
    }
)
# A proxy or load balancer in front of the endpoint answers with a bare status, no code.
TRANSIENT_HTTP_STATUSES = frozenset({429, 500, 502, 503, 504})

# Titan Text Embeddings V2 accepts exactly these output sizes (1024 is its default).
TITAN_V2_DIMENSIONS = (256, 512, 1024)

# Role and turn markers the model adds around the messages; small, counted so that a
# prompt right at the limit still fits.
_FRAMING_TOKENS = 32


# ---------------------------------------------------------------------------------- errors


class BedrockError(RuntimeError):
    """A Bedrock call that failed for good. The message names the operation, the model and
    the service's error code; it never holds credentials (key ids, signatures are redacted)."""

    def __init__(self, message: str, *, model_id: str, code: str | None = None, http_status: int | None = None):
        super().__init__(message)
        self.model_id = model_id
        self.code = code
        self.http_status = http_status


class BedrockThrottledError(BedrockError):
    """Every attempt was throttled or found the service unavailable."""


_SECRETS = (
    (re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA|ABIA|ACCA)[A-Z0-9]{12,}\b"), "<redacted-key-id>"),
    (re.compile(r"Credential=[^\s,\"']+"), "Credential=<redacted>"),
    # A SigV4 credential scope begins with the access key id, whatever its format.
    (re.compile(r"[^\s/=\"']+(/\d{8}/[a-z0-9-]+/[a-z0-9-]+/aws4_request)"), r"<redacted>\1"),
    (re.compile(r"Signature=[0-9a-fA-F]+"), "Signature=<redacted>"),
    (re.compile(r"(X-Amz-Security-Token[=:]\s*)[^\s,\"'&]+", re.IGNORECASE), r"\1<redacted>"),
)


def redact_credentials(message: str) -> str:
    """The message with AWS access key ids, SigV4 credential scopes, signatures and session
    tokens replaced: service messages sometimes echo the request's Authorization header."""
    for pattern, replacement in _SECRETS:
        message = pattern.sub(replacement, message)
    return message


def _error_code_and_status(exc: ClientError) -> tuple[str, int | None]:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(error.get("Code") or status or "UnknownError"), status


def is_transient(code: str, http_status: int | None) -> bool:
    return code in TRANSIENT_ERROR_CODES or http_status in TRANSIENT_HTTP_STATUSES


def _final_error(operation: str, model_id: str, exc: ClientError) -> BedrockError:
    code, status = _error_code_and_status(exc)
    detail = redact_credentials(str(exc.response.get("Error", {}).get("Message") or "no message"))
    return BedrockError(
        f"Bedrock {operation} with model {model_id!r} failed: {code} (HTTP {status}): {detail}",
        model_id=model_id,
        code=code,
        http_status=status,
    )


# ---------------------------------------------------------------------------------- retries


def backoff_delay(attempt: int, *, base: float = 1.0, cap: float = 30.0, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): exponential with equal
    jitter, half fixed and half random. The random half keeps concurrent workers from
    retrying in step; the fixed half keeps a retry from landing at once on a per-minute quota."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def _sdk_retries(response: dict) -> int:
    """Retries botocore made itself before handing back this response (0 when its retries are off)."""
    return int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0)


def call_with_retries(
    call: Callable[[], Any],
    *,
    operation: str,
    model_id: str,
    max_attempts: int,
    sleep: Callable[[float], None],
    on_retry: Callable[[int], None],
) -> Any:
    """``call()``, retried with backoff while Bedrock throttles, is unavailable or the read
    times out. Other errors raise ``BedrockError`` at once: retrying a bad request or a
    denied model only multiplies the failure. ``on_retry(n)`` counts refused attempts."""
    for attempt in range(1, max_attempts + 1):
        try:
            response = call()
        except ClientError as exc:
            code, status = _error_code_and_status(exc)
            if not is_transient(code, status):
                raise _final_error(operation, model_id, exc) from None  # the raw error may echo credentials
            on_retry(1 + _sdk_retries(exc.response))
            last = f"{code} (HTTP {status})"
        except (ReadTimeoutError, ConnectionClosedError) as exc:
            on_retry(1)
            last = type(exc).__name__
        else:
            if isinstance(response, dict):
                on_retry(_sdk_retries(response))
            return response
        if attempt < max_attempts:
            sleep(backoff_delay(attempt))
    raise BedrockThrottledError(
        f"Bedrock {operation} with model {model_id!r} still refused after {max_attempts} attempts; last: {last}",
        model_id=model_id,
        code=last.split(" ")[0],
    )


def _warn_if_sdk_retries(client: Any) -> None:
    retries = getattr(getattr(getattr(client, "meta", None), "config", None), "retries", None)
    if retries is None:  # not a botocore client (a test double): nothing to say
        return
    total = retries.get("total_max_attempts")
    if total is None or total > 1:
        log.warning(
            "the bedrock-runtime client retries by itself too (%s); pass "
            "Config(retries={'total_max_attempts': 1, 'mode': 'standard'}) so that backoff happens once",
            retries,
        )


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")


class _Tally:
    """Token, call and retry counts, added to from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.input_tokens = 0
        self.output_tokens = 0
        self.calls = 0
        self.throttled = 0

    def add_call(self, input_tokens: int, output_tokens: int = 0) -> None:
        with self._lock:
            self.calls += 1
            self.input_tokens += input_tokens
            self.output_tokens += output_tokens

    def add_throttled(self, n: int) -> None:
        if n:
            with self._lock:
                self.throttled += n


def _map_bounded(function: Callable[[int], Any], n: int, max_concurrency: int, name: str) -> list[Any]:
    """[function(0), ..., function(n - 1)] on at most ``max_concurrency`` threads, in order.
    On the first failure, whichever call it is, the calls not yet started are cancelled, so
    one bad request does not send the rest; the failure of the lowest index is raised."""
    if n == 1:
        return [function(0)]
    pool = ThreadPoolExecutor(max_workers=min(max_concurrency, n), thread_name_prefix=name)
    try:
        futures = [pool.submit(function, i) for i in range(n)]
        wait(futures, return_when=FIRST_EXCEPTION)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    for future in futures:
        if not future.cancelled() and future.exception() is not None:
            raise future.exception()
    return [future.result() for future in futures]


# ---------------------------------------------------------------------------------- chunking


def estimate_tokens(text: str) -> int:
    """Tokens ``text`` is likely to take, erring high: UTF-8 bytes / 3.5 (module docstring)."""
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


# Places to cut, best first: after a paragraph break, after a sentence end (with closing
# quotes or brackets), after any whitespace.
_CUTS = (
    re.compile(r"\n[ \t\r\f\v]*\n\s*"),
    re.compile(r"[.!?\u2026][\"'\u201d\u2019\u00bb)\]]*\s+"),
    re.compile(r"\s+"),
)


def _cut_after(text: str, pattern: re.Pattern[str]) -> Iterator[str]:
    """Consecutive pieces of ``text``, each ending just after a match of ``pattern``."""
    start = 0
    for match in pattern.finditer(text):
        if match.end() > start:
            yield text[start : match.end()]
            start = match.end()
    if start < len(text):
        yield text[start:]


def _pieces_within(text: str, max_bytes: int, level: int = 0) -> Iterator[tuple[str, int]]:
    """(piece, UTF-8 size) covering ``text`` in order, each at most ``max_bytes``: a piece
    too big is cut at the next finer kind of boundary, and as a last resort anywhere."""
    size = len(text.encode("utf-8"))
    if size <= max_bytes:
        yield text, size
    elif level < len(_CUTS):
        for piece in _cut_after(text, _CUTS[level]):
            yield from _pieces_within(piece, max_bytes, level + 1)
    else:
        step = max(1, max_bytes // 4)  # a character is at most 4 UTF-8 bytes
        for start in range(0, len(text), step):
            piece = text[start : start + step]
            yield piece, len(piece.encode("utf-8"))


def split_into_chunks(text: str, max_tokens: int) -> list[str]:
    """``text`` in consecutive chunks of at most ``max_tokens`` estimated tokens each, cut at
    paragraph breaks where the paragraphs allow, else at sentence ends, else at spaces.
    Joined, the chunks give ``text`` back exactly. Linear in the length of ``text``."""
    if not text:
        return []
    max_bytes = math.floor(max_tokens * BYTES_PER_TOKEN)
    if max_bytes < 4:
        raise ValueError(f"max_tokens={max_tokens} is too small to hold any text")
    chunks: list[str] = []
    current: list[str] = []
    current_bytes = 0
    for piece, size in _pieces_within(text, max_bytes):
        if current and current_bytes + size > max_bytes:
            chunks.append("".join(current))
            current, current_bytes = [], 0
        current.append(piece)
        current_bytes += size
    if current:
        chunks.append("".join(current))
    return chunks


# ---------------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class BedrockSummary:
    text: str
    input_tokens: int  # as the model counted them, over every call
    output_tokens: int
    calls: int  # successful converse calls: 1, or chunks + merges
    cost_usd: float
    throttled: int  # attempts refused and retried


_BOOK_PROMPT = (
    "You summarize books for a search index. Write a faithful summary of the book in the user "
    "message, in at most {words} words: its subject, its main ideas or plot, and how it ends "
    "or concludes. Reply with the summary only."
)
_PART_PROMPT = (
    "You summarize books for a search index. The user message is part {part} of {parts} of a "
    "book too long to read at once. Summarize this part, in at most {words} words, keeping the "
    "names, events and ideas a summary of the whole book would need. Reply with the summary only."
)
_MERGE_PROMPT = (
    "You summarize books for a search index. The user message holds summaries of consecutive "
    "parts of one book, in order. Merge them into one faithful summary of the whole book, in at "
    "most {words} words: its subject, its main ideas or plot, and how it ends or concludes. "
    "Reply with the summary only."
)
_MERGE_PART_PROMPT = (
    "You summarize books for a search index. The user message holds summaries of consecutive "
    "parts of a book, in order: group {part} of {parts}. Merge them into one summary of this "
    "stretch of the book, in at most {words} words, keeping the names, events and ideas a "
    "summary of the whole book would need. Reply with the summary only."
)


class BedrockSummarizer:
    """Book summaries from a Bedrock chat model through the Converse API.

    A book that fits ``max_input_tokens`` (estimated, with the instructions) is one call.
    A longer one is map-reduced: cut into chunks of at most ``chunk_tokens`` at paragraph
    or sentence boundaries, the chunks summarized ``max_concurrency`` at a time, and the
    chunk summaries, joined in order, summarized again (and again, chunked, while still
    too long). ``max_input_tokens`` defaults well below Claude 3's 200k context to leave
    room for the estimate's error. Prices are per 1,000 tokens, on-demand, in USD.
    """

    def __init__(
        self,
        client: Any,
        model_id: str = "anthropic.claude-3-haiku-20240307-v1:0",
        max_input_tokens: int = 150_000,
        chunk_tokens: int = 50_000,
        max_output_tokens: int = 400,
        max_concurrency: int = 4,
        price_per_1k_input: float = 0.00025,
        price_per_1k_output: float = 0.00125,
        max_attempts: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ):
        _check_positive(
            max_input_tokens=max_input_tokens,
            chunk_tokens=chunk_tokens,
            max_output_tokens=max_output_tokens,
            max_concurrency=max_concurrency,
            max_attempts=max_attempts,
        )
        self.client = client
        self.model_id = model_id
        self.name = f"bedrock:{model_id}"
        self.version = model_id
        self.max_input_tokens = max_input_tokens
        self.max_output_tokens = max_output_tokens
        self.max_concurrency = max_concurrency
        self.price_per_1k_input = price_per_1k_input
        self.price_per_1k_output = price_per_1k_output
        self.max_attempts = max_attempts
        self._sleep = sleep
        words = max(1, self.max_output_tokens * 3 // 4)  # about 0.75 English words a token
        self._prompts = {
            name: template.replace("{words}", str(words))
            for name, template in (
                ("book", _BOOK_PROMPT),
                ("part", _PART_PROMPT),
                ("merge", _MERGE_PROMPT),
                ("merge_part", _MERGE_PART_PROMPT),
            )
        }
        self.chunk_tokens = min(chunk_tokens, max_input_tokens - self._longest_part_prompt_tokens() - _FRAMING_TOKENS)
        # Each merge level must shrink the text: a chunk must hold at least two summaries' worth.
        # (chunk_tokens is from here on the budget a chunk really gets, instructions left out.)
        if self.chunk_tokens < 2 * max_output_tokens:
            raise ValueError(
                f"chunks of {self.chunk_tokens} tokens (chunk_tokens={chunk_tokens}, max_input_tokens="
                f"{max_input_tokens} less the instructions) leave too little room to summarize in "
                f"{max_output_tokens}-token summaries; allow at least {2 * max_output_tokens}"
            )
        _warn_if_sdk_retries(client)

    def summarize(self, text: str) -> BedrockSummary:
        if not text.strip():
            raise ValueError("nothing to summarize: the book text is empty")
        tally = _Tally()
        summary = self._summarize_level(text, level=0, tally=tally)
        return BedrockSummary(
            text=summary,
            input_tokens=tally.input_tokens,
            output_tokens=tally.output_tokens,
            calls=tally.calls,
            cost_usd=self.cost_usd(tally.input_tokens, tally.output_tokens),
            throttled=tally.throttled,
        )

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return input_tokens / 1000 * self.price_per_1k_input + output_tokens / 1000 * self.price_per_1k_output

    def fits(self, system: str, text: str) -> bool:
        """Whether one call with these instructions and this text stays within max_input_tokens."""
        return estimate_tokens(system) + estimate_tokens(text) + _FRAMING_TOKENS <= self.max_input_tokens

    def _summarize_level(self, text: str, level: int, tally: _Tally) -> str:
        """Level 0 is the book, level 1 the chunk summaries joined, and so on up."""
        whole_prompt = self._prompts["book" if level == 0 else "merge"]
        if self.fits(whole_prompt, text):
            return self._converse(whole_prompt, text, tally)
        chunks = split_into_chunks(text, self.chunk_tokens)
        part_prompt = self._prompts["part" if level == 0 else "merge_part"]

        def summarize_chunk(i: int) -> str:
            return self._converse(part_prompt.format(part=i + 1, parts=len(chunks)), chunks[i], tally)

        merged = "\n\n".join(_map_bounded(summarize_chunk, len(chunks), self.max_concurrency, "bedrock-summarize"))
        if estimate_tokens(merged) >= estimate_tokens(text):  # a model ignoring its length limit
            raise BedrockError(
                f"summaries from model {self.model_id!r} do not shrink the text ({estimate_tokens(text)} -> "
                f"{estimate_tokens(merged)} estimated tokens at level {level}); lower max_output_tokens",
                model_id=self.model_id,
            )
        return self._summarize_level(merged, level + 1, tally)

    def _converse(self, system: str, text: str, tally: _Tally) -> str:
        def call() -> dict:
            return self.client.converse(
                modelId=self.model_id,
                messages=[{"role": "user", "content": [{"text": text.strip()}]}],
                system=[{"text": system}],
                inferenceConfig={"maxTokens": self.max_output_tokens, "temperature": 0},
            )

        response = call_with_retries(
            call,
            operation="converse",
            model_id=self.model_id,
            max_attempts=self.max_attempts,
            sleep=self._sleep,
            on_retry=tally.add_throttled,
        )
        usage = response.get("usage", {})
        tally.add_call(int(usage.get("inputTokens", 0)), int(usage.get("outputTokens", 0)))
        return self._reply_text(response)

    def _reply_text(self, response: dict) -> str:
        blocks = response.get("output", {}).get("message", {}).get("content", [])
        text = "".join(block.get("text", "") for block in blocks).strip()
        stop = response.get("stopReason")
        if not text or stop in ("content_filtered", "guardrail_intervened"):
            raise BedrockError(
                f"Bedrock converse with model {self.model_id!r} returned no summary (stopReason={stop})",
                model_id=self.model_id,
                code=stop,
            )
        return text

    def _longest_part_prompt_tokens(self) -> int:
        widest = {"part": 10**6, "parts": 10**6}  # room for any chunk number
        return max(estimate_tokens(self._prompts[name].format(**widest)) for name in ("part", "merge_part"))


# ---------------------------------------------------------------------------------- embeddings


class BedrockEmbedder:
    """Text embeddings from Titan Text Embeddings V2 through InvokeModel, one request a text
    (the model has no batch call), ``max_concurrency`` requests at a time.

    ``dimensions`` must be one the model offers: 1024, 512 or 256 for Titan V2 (AWS reports
    512 keeps about 99% of 1024's retrieval accuracy, 256 about 97%). ``input_tokens``,
    ``calls`` and ``throttled`` add up over the embedder's life, across threads.
    """

    def __init__(
        self,
        client: Any,
        model_id: str = "amazon.titan-embed-text-v2:0",
        dimensions: int = 1024,
        normalize: bool = True,
        max_concurrency: int = 4,
        max_attempts: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ):
        _check_positive(dimensions=dimensions, max_concurrency=max_concurrency, max_attempts=max_attempts)
        if "titan-embed-text-v2" in model_id and dimensions not in TITAN_V2_DIMENSIONS:
            raise ValueError(f"{model_id} makes embeddings of {TITAN_V2_DIMENSIONS} dimensions, not {dimensions}")
        self.client = client
        self.model_id = model_id
        self.dimensions = dimensions
        self.normalize = normalize
        self.max_concurrency = max_concurrency
        self.max_attempts = max_attempts
        self._sleep = sleep
        self.name = f"bedrock:{model_id}"
        # The vectors change with their size and scaling, so both are part of the version.
        self.version = f"{model_id}/{dimensions}/{'normalized' if normalize else 'raw'}"
        self._tally = _Tally()
        _warn_if_sdk_retries(client)

    @property
    def input_tokens(self) -> int:
        return self._tally.input_tokens

    @property
    def calls(self) -> int:
        return self._tally.calls

    @property
    def throttled(self) -> int:
        return self._tally.throttled

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, in order: shape (len(texts), dimensions), float32."""
        texts = list(texts)
        for i, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"text {i} is empty; {self.model_id} rejects empty input")
        vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)

        def embed_one(i: int) -> None:
            vectors[i] = self._embed_text(texts[i])  # each thread its own row

        if texts:
            _map_bounded(embed_one, len(texts), self.max_concurrency, "bedrock-embed")
        return vectors

    def _embed_text(self, text: str) -> list[float]:
        body = json.dumps({"inputText": text, "dimensions": self.dimensions, "normalize": self.normalize})

        def call() -> dict:
            response = self.client.invoke_model(
                modelId=self.model_id, body=body, contentType="application/json", accept="application/json"
            )
            # Read inside the retried call: a read timeout on the body is as transient as one on the headers.
            payload = json.loads(response["body"].read())
            return {"payload": payload, "ResponseMetadata": response.get("ResponseMetadata", {})}

        result = call_with_retries(
            call,
            operation="invoke_model",
            model_id=self.model_id,
            max_attempts=self.max_attempts,
            sleep=self._sleep,
            on_retry=self._tally.add_throttled,
        )
        payload = result["payload"]
        embedding = payload.get("embedding")
        if not isinstance(embedding, list) or len(embedding) != self.dimensions:
            got = len(embedding) if isinstance(embedding, list) else type(embedding).__name__
            raise BedrockError(
                f"Bedrock invoke_model with model {self.model_id!r} returned an embedding of {got}, "
                f"expected {self.dimensions} dimensions",
                model_id=self.model_id,
            )
        self._tally.add_call(int(payload.get("inputTextTokenCount", 0)))
        return embedding
