"""The HTTP side: one aiohttp session per run, and one request → one `Answer`.

One `ClientSession` and one `TCPConnector` (its pool sized to the run's concurrency, so
every worker keeps a warm keep-alive connection) serve the whole run; a session per
request would pay a TCP handshake each time. Answers are read as bytes and decoded by the
caller, which skips aiohttp's content-type checks and text decoding on the hot path.

The API key goes into one header and nowhere else; error texts taken from answers are
scrubbed of it (an API that echoes the request would otherwise put it in a dead letter).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from yarl import URL

from engine.enrichment.breaker import BreakerSettings
from engine.enrichment.limiter import RateSettings
from engine.enrichment.retry import RetrySettings
from engine.enrichment.template import Request

if TYPE_CHECKING:
    import aiohttp

TIMEOUT, CONNECTION = "timeout", "connection"


@dataclass(frozen=True)
class ApiSettings:
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"  # "" puts the bare key in the header
    concurrency: int = 128
    connect_timeout: float = 5.0
    request_timeout: float = 30.0
    rate: RateSettings | None = RateSettings(5000.0)  # None: no limit (the ceiling benchmark)
    redis_url: str | None = field(default=None, repr=False)
    limiter_key: str | None = None  # default: one per API host (see limiter_key_for)
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()

    def __post_init__(self):
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"the API's base URL must be http:// or https://, not {self.base_url!r}")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")

    def resolved_limiter_key(self) -> str:
        return self.limiter_key or limiter_key_for(self.base_url)


def limiter_key_for(base_url: str) -> str:
    """Every run against the same API host shares one budget unless told otherwise."""
    url = URL(base_url)
    return f"floodgate:enrichment:rate:{url.host}:{url.port}"


@dataclass(slots=True)
class Answer:
    status: int | None  # None: no HTTP answer (timeout, connection error)
    body: bytes = b""
    retry_after: str | None = None
    cause: str = ""  # for retries: http_<status>, timeout or connection
    error: str = ""


class ApiClient:
    def __init__(self, settings: ApiSettings, method: str):
        self.settings = settings
        self.method = method
        self._base = settings.base_url.rstrip("/")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if settings.api_key:
            scheme = f"{settings.auth_scheme} " if settings.auth_scheme else ""
            self._headers[settings.auth_header] = scheme + settings.api_key
        self._urls: dict[str, URL] = {}
        self._session: aiohttp.ClientSession | None = None
        self._connection_errors: tuple[type[BaseException], ...] = (OSError,)

    def add_headers(self, headers: dict[str, str]) -> None:
        # the template's static headers; the auth header is set last and wins
        auth = {self.settings.auth_header: self._headers[self.settings.auth_header]} if self.settings.api_key else {}
        self._headers = {**self._headers, **headers, **auth}

    async def __aenter__(self) -> "ApiClient":
        # imported here, not with the module: the code location imports this module, and so
        # every run's process, of every pipeline; aiohttp costs it about 8 MB
        import aiohttp

        s = self.settings
        connector = aiohttp.TCPConnector(limit=s.concurrency, limit_per_host=s.concurrency, keepalive_timeout=30)
        timeout = aiohttp.ClientTimeout(total=s.request_timeout, connect=s.connect_timeout)
        # no cookie jar: an API that sets cookies does not need them back, and filtering the
        # jar for every request costs microseconds the hot path does not have
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, raise_for_status=False, cookie_jar=aiohttp.DummyCookieJar()
        )
        self._connection_errors = (aiohttp.ClientError, OSError)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._session is not None:
            await self._session.close()

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = URL(self._base + path, encoded=True)  # the template quoted the path already
            if len(self._urls) < 1024:  # static paths repeat; per-record paths need no cache
                self._urls[path] = url
        return url

    async def send(self, request: Request) -> Answer:
        try:
            async with self._session.request(
                self.method, self._url(request.path), params=request.params, data=request.body, headers=self._headers
            ) as response:
                body = await response.read()
                status = response.status
                if status < 300:
                    return Answer(status, body)
                return Answer(status, body, response.headers.get("Retry-After"), f"http_{status}")
        except asyncio.TimeoutError:  # aiohttp's timeouts subclass it (and ClientError)
            return Answer(None, cause=TIMEOUT, error=f"no answer within {self.settings.request_timeout:g}s")
        except self._connection_errors as exc:  # refused, reset, closed without an answer
            return Answer(None, cause=CONNECTION, error=self.scrub(f"{type(exc).__name__}: {exc}"))

    def scrub(self, text: str) -> str:
        key = self.settings.api_key
        return text.replace(key, "***") if key else text
