"""The enrichment API: where it is, how fast it may be called, how failures are handled, and
the request template. Settings only; the engine (engine/enrichment) does the calling.

The API key is a secret: set `api_key` with `dg.EnvVar("FLOODGATE_ENRICHMENT_API_KEY")`
(the UI shows the variable's name, never its value), or leave it unset and the key is read
from that variable when a run starts. It goes into one request header only: it is not in
logs, metadata or error texts (`describe` leaves it out; answers that echo it are
scrubbed). A `redis_url` may carry a password too: it is shown redacted.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import dagster as dg
from pydantic import Field

from engine.enrichment.client import ApiSettings
from engine.enrichment.limiter import redacted_url
from engine.enrichment.settings import API_KEY_VARIABLE, FLAT_DEFAULTS, api_settings, request_template
from engine.enrichment.template import RequestTemplate

D = FLAT_DEFAULTS


class EnrichmentApi(dg.ConfigurableResource):
    """Every setting has a default; `enrichment_api_from_environment` reads overrides."""

    base_url: str = Field(default=D["base_url"], description="The API's root, http(s)://host[:port][/prefix].")
    api_key: Optional[str] = Field(default=None, description="The API key (use dg.EnvVar); unset: read from api_key_variable.")
    api_key_variable: str = API_KEY_VARIABLE
    auth_header: str = D["auth_header"]
    auth_scheme: str = Field(default=D["auth_scheme"], description='"Bearer" → "Bearer <key>"; "" → the bare key.')
    rate: float = Field(default=D["rate"], description="The API's limit in requests per second (per 1-second window); 0: no limit.")
    burst: Optional[int] = Field(default=None, description="Sends an idle client may release at once (unset: 10 ms of the rate); at most headroom * rate / 2.")
    headroom: float = Field(default=D["headroom"], description="Share of the rate left unused for arrival jitter.")
    max_lag_seconds: float = D["max_lag_seconds"]
    concurrency: int = Field(default=D["concurrency"], description="Requests in flight at once (and pooled connections).")
    connect_timeout: float = D["connect_timeout"]
    request_timeout: float = D["request_timeout"]
    redis_url: Optional[str] = Field(default=None, description="Set: the rate is shared by every process using limiter_key.")
    limiter_key: Optional[str] = Field(default=None, description="Redis key of the shared budget; default: one per API host.")
    max_attempts: int = D["max_attempts"]
    backoff_base: float = D["backoff_base"]
    max_backoff: float = D["max_backoff"]
    max_retry_after: float = D["max_retry_after"]
    breaker_failure_rate: float = D["breaker_failure_rate"]
    breaker_window: int = D["breaker_window"]
    breaker_min_calls: int = D["breaker_min_calls"]
    breaker_open_seconds: float = D["breaker_open_seconds"]
    breaker_max_open_seconds: float = Field(default=D["breaker_max_open_seconds"], description="Open this long without recovering: the run fails.")
    template_method: str = D["template_method"]
    template_path: str = Field(default=D["template_path"], description="URL path; {field} is the record's value.")
    template_query_fields: dict[str, str] = Field(default_factory=dict, description="Query parameter → record field.")
    template_body_fields: Optional[dict[str, str]] = Field(default=None, description="JSON body key → record field; unset: the whole record.")
    template_headers: dict[str, str] = Field(default_factory=dict)
    template_response_fields: dict[str, str] = Field(
        default_factory=lambda: dict(D["template_response_fields"]), description="Output column → dotted path in the answer."
    )
    template_response_types: dict[str, str] = Field(default_factory=dict, description="Output column → string|int64|float64|bool|json.")
    batch_size: int = Field(default=D["batch_size"], description="Records per call; > 1 uses the batch endpoint.")
    batch_path: Optional[str] = None
    batch_items_key: str = D["batch_items_key"]
    batch_results_key: str = D["batch_results_key"]

    def flat_settings(self) -> dict[str, Any]:
        """The engine's flat settings (engine/enrichment/settings.py), secrets included."""
        return {name: getattr(self, name) for name in FLAT_DEFAULTS}

    def settings(self) -> ApiSettings:
        return api_settings(self.flat_settings())

    def template(self) -> RequestTemplate:
        return request_template(self.flat_settings())

    def describe(self) -> str:
        """For logs and metadata: no key, no Redis password."""
        limit = f"{self.rate:,.0f}/s" if self.rate else "no limit"
        shared = f", shared through Redis {redacted_url(self.redis_url)}" if self.redis_url else ", in-process"
        key = "set" if (self.api_key or os.environ.get(self.api_key_variable)) else "none"
        return f"{self.template_method} {self.base_url.rstrip('/')}{self.template_path}, {limit}{shared}, concurrency {self.concurrency}, API key {key}"


# setting → the variable that overrides it (plain values; the key is read through dg.EnvVar)
ENRICHMENT_API_VARIABLES = {
    "base_url": "FLOODGATE_ENRICHMENT_API_URL",
    "rate": "FLOODGATE_ENRICHMENT_RATE",
    "burst": "FLOODGATE_ENRICHMENT_BURST",
    "concurrency": "FLOODGATE_ENRICHMENT_CONCURRENCY",
    "request_timeout": "FLOODGATE_ENRICHMENT_TIMEOUT_SECONDS",
    "max_attempts": "FLOODGATE_ENRICHMENT_MAX_ATTEMPTS",
    "breaker_max_open_seconds": "FLOODGATE_ENRICHMENT_BREAKER_MAX_OPEN_SECONDS",
    "template_path": "FLOODGATE_ENRICHMENT_PATH",
    "batch_size": "FLOODGATE_ENRICHMENT_BATCH_SIZE",
}
SECRET_VARIABLES = {"api_key": API_KEY_VARIABLE, "redis_url": "REDIS_URL"}  # through dg.EnvVar: never in the UI
TEMPLATE_VARIABLE = "FLOODGATE_ENRICHMENT_TEMPLATE"  # JSON of template_* / batch_* settings


def enrichment_api_from_environment() -> EnrichmentApi:
    """Defaults, overridden by the variables above that are set; secrets as dg.EnvVar."""
    import json

    overrides: dict[str, Any] = {s: os.environ[v] for s, v in ENRICHMENT_API_VARIABLES.items() if v in os.environ}
    if os.environ.get(TEMPLATE_VARIABLE):
        try:
            template = json.loads(os.environ[TEMPLATE_VARIABLE])
        except ValueError as exc:
            raise ValueError(f"{TEMPLATE_VARIABLE} is not JSON: {exc}") from None
        allowed = {k for k in FLAT_DEFAULTS if k.startswith(("template_", "batch_"))}
        unknown = set(template) - allowed
        if unknown:
            raise ValueError(f"{TEMPLATE_VARIABLE} has unknown settings {sorted(unknown)} (allowed: {sorted(allowed)})")
        overrides.update(template)
    secrets = {s: dg.EnvVar(v) for s, v in SECRET_VARIABLES.items() if os.environ.get(v)}
    try:
        return EnrichmentApi(**overrides, **secrets)
    except ValueError as exc:
        names = ", ".join(f"{ENRICHMENT_API_VARIABLES.get(k, TEMPLATE_VARIABLE)}={v!r}" for k, v in overrides.items())
        raise ValueError(f"invalid enrichment API setting from the environment ({names}): {exc}") from None
