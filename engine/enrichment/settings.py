"""Flat settings, as the Dagster resource and the CLI hold them, → the engine's dataclasses.

One flat namespace (`rate`, `max_attempts`, `breaker_failure_rate`, `template_path`, …) is
what a person sets; the engine groups it. `FLAT_DEFAULTS` is the single list of those
settings and their defaults.
"""

from __future__ import annotations

import os
from typing import Any

from engine.enrichment.breaker import BreakerSettings
from engine.enrichment.client import ApiSettings
from engine.enrichment.limiter import RateSettings
from engine.enrichment.retry import RetrySettings
from engine.enrichment.template import RequestTemplate

API_KEY_VARIABLE = "FLOODGATE_ENRICHMENT_API_KEY"

FLAT_DEFAULTS: dict[str, Any] = {
    "base_url": "http://127.0.0.1:8765",
    "api_key": None,  # else read from the variable named by api_key_variable
    "api_key_variable": API_KEY_VARIABLE,
    "auth_header": "Authorization",
    "auth_scheme": "Bearer",
    "rate": 5000.0,  # the API's limit, requests per second; 0: no limit
    "burst": None,  # None: 10 ms of the rate (limiter.py says why)
    "headroom": 0.02,
    "max_lag_seconds": 0.005,
    "concurrency": 128,
    "connect_timeout": 5.0,
    "request_timeout": 30.0,
    "redis_url": None,  # set: one budget across every process using the same limiter_key
    "limiter_key": None,
    "max_attempts": 8,
    "backoff_base": 0.1,
    "max_backoff": 30.0,
    "max_retry_after": 300.0,
    "breaker_failure_rate": 0.5,
    "breaker_window": 100,
    "breaker_min_calls": 20,
    "breaker_open_seconds": 2.0,
    "breaker_max_open_seconds": 120.0,
    "template_method": "POST",
    "template_path": "/v1/enrich",
    "template_query_fields": {},
    "template_body_fields": None,
    "template_headers": {},
    "template_response_fields": {"score": "data.score", "label": "data.label"},
    "template_response_types": {},
    "batch_size": 1,
    "batch_path": None,
    "batch_items_key": "records",
    "batch_results_key": "results",
}


def api_settings(flat: dict[str, Any]) -> ApiSettings:
    s = {**FLAT_DEFAULTS, **flat}
    unknown = set(flat) - set(FLAT_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown enrichment API settings: {', '.join(sorted(unknown))}")
    api_key = s["api_key"] or (os.environ.get(s["api_key_variable"]) if s["api_key_variable"] else None) or None
    rate = None
    if s["rate"] and float(s["rate"]) > 0:
        burst = None if s["burst"] in (None, "") else int(s["burst"])
        rate = RateSettings(float(s["rate"]), burst, float(s["headroom"]), float(s["max_lag_seconds"]))
    return ApiSettings(
        base_url=s["base_url"],
        api_key=api_key,
        auth_header=s["auth_header"],
        auth_scheme=s["auth_scheme"],
        concurrency=int(s["concurrency"]),
        connect_timeout=float(s["connect_timeout"]),
        request_timeout=float(s["request_timeout"]),
        rate=rate,
        redis_url=s["redis_url"] or None,
        limiter_key=s["limiter_key"] or None,
        retry=RetrySettings(int(s["max_attempts"]), float(s["backoff_base"]), float(s["max_backoff"]), float(s["max_retry_after"])),
        breaker=BreakerSettings(
            float(s["breaker_failure_rate"]),
            int(s["breaker_window"]),
            int(s["breaker_min_calls"]),
            float(s["breaker_open_seconds"]),
            float(s["breaker_max_open_seconds"]),
        ),
    )


def request_template(flat: dict[str, Any]) -> RequestTemplate:
    s = {**FLAT_DEFAULTS, **flat}
    return RequestTemplate(
        method=s["template_method"],
        path=s["template_path"],
        query_fields=dict(s["template_query_fields"] or {}),
        body_fields=None if s["template_body_fields"] is None else dict(s["template_body_fields"]),
        headers=dict(s["template_headers"] or {}),
        response_fields=dict(s["template_response_fields"] or {}),
        response_types=dict(s["template_response_types"] or {}),
        batch_size=int(s["batch_size"]),
        batch_path=s["batch_path"] or None,
        batch_items_key=s["batch_items_key"],
        batch_results_key=s["batch_results_key"],
    )
