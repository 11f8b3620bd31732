"""The pieces that decide what happens to a request: the circuit breaker, the retry policy,
and the request template."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from engine.enrichment.breaker import CLOSED, HALF_OPEN, OPEN, BreakerGaveUp, BreakerSettings, CircuitBreaker
from engine.enrichment.retry import RetrySettings, backoff, retriable_status, retry_after_seconds
from engine.enrichment.template import RecordError, RequestTemplate, ResponseError


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- circuit breaker ------------------------------------------------------------------------


def test_breaker_opens_at_the_failure_rate_once_enough_calls_are_in():
    breaker = CircuitBreaker(BreakerSettings(failure_rate=0.5, window=10, min_calls=6), clock=Clock())
    for failed in (True, True, True, True, True):  # 5 failures: fewer than min_calls
        breaker.record(failed)
    assert breaker.state == CLOSED
    breaker.record(False)  # 5 of 6 failed
    assert breaker.state == OPEN and breaker.openings == 1


def test_breaker_rate_is_over_the_last_window_of_calls():
    breaker = CircuitBreaker(BreakerSettings(failure_rate=0.5, window=4, min_calls=4), clock=Clock())
    for failed in (True, False, False, False, False, True):
        breaker.record(failed)
        assert breaker.state == CLOSED
    breaker.record(True)  # the last 4: F, F, T, T (over all 7 calls it would be 3 of 7, under 50%)
    assert breaker.state == OPEN


def test_open_breaker_holds_callers_then_lets_one_probe_and_closes_on_success():
    async def scenario():
        clock = Clock()
        breaker = CircuitBreaker(BreakerSettings(failure_rate=0.5, window=4, min_calls=2, open_seconds=0.05, max_open_seconds=5), clock=clock)
        breaker.record(True)
        breaker.record(True)
        assert breaker.state == OPEN
        waiters = [asyncio.create_task(breaker.admit()) for _ in range(3)]
        await asyncio.sleep(0)  # they start, see it open, and wait
        assert not any(w.done() for w in waiters)
        clock.now += 0.05  # the probe is due
        done, pending = await asyncio.wait(waiters, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        assert [w.result() for w in done] == [True] and len(pending) == 2  # exactly one probe
        assert breaker.state == HALF_OPEN
        breaker.record(False, probe=True)
        results = await asyncio.wait_for(asyncio.gather(*pending), 5)
        assert results == [False, False] and breaker.state == CLOSED

    asyncio.run(scenario())


def test_failed_probes_reopen_with_longer_waits_then_the_breaker_gives_up():
    async def scenario():
        clock = Clock()
        settings = BreakerSettings(failure_rate=1.0, window=2, min_calls=2, open_seconds=1, max_open_seconds=5)
        breaker = CircuitBreaker(settings, clock=clock)
        breaker.record(True, what="HTTP 503")
        breaker.record(True, what="HTTP 503")
        opened = clock.now
        probe_times = []
        while True:
            clock.now = breaker._probe_at  # jump to each probe, no real waiting
            try:
                probe = await asyncio.wait_for(breaker.admit(), 1)
            except BreakerGaveUp as exc:
                message = str(exc)
                break
            assert probe
            probe_times.append(clock.now - opened)
            breaker.record(True, probe=True, what="HTTP 503")
        assert probe_times == [1, 3]  # waits of 1 s then 2 s; the next (4 s) would end past 5 s
        assert clock.now - opened >= 5
        assert "no probe succeeded" in message and "HTTP 503" in message
        with pytest.raises(BreakerGaveUp):  # and everybody else hears it too
            await breaker.admit()

    asyncio.run(scenario())


def test_answers_to_requests_sent_before_opening_do_not_count():
    breaker = CircuitBreaker(BreakerSettings(failure_rate=0.5, window=4, min_calls=2), clock=Clock())
    breaker.record(True)
    breaker.record(True)
    breaker.record(False)  # an old request's success does not close it
    assert breaker.state == OPEN


# --- retries ------------------------------------------------------------------------------


def test_retriable_statuses():
    assert [s for s in (200, 400, 401, 404, 409, 422, 429, 500, 502, 503, 504) if retriable_status(s)] == [429, 500, 502, 503, 504]


def test_retry_after_in_seconds_or_as_a_date():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(" 0.5 ") == 0.5
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=7), usegmt=True), now) == 7.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=7), usegmt=True), now) == 0.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None


def test_backoff_grows_exponentially_with_jitter_and_honours_retry_after():
    settings = RetrySettings(backoff_base=0.1, max_backoff=1.0, max_retry_after=10)
    rng = random.Random(1)
    for attempt, ceiling in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)):
        waits = [backoff(attempt, None, settings, rng) for _ in range(300)]
        assert 0 <= min(waits) and max(waits) <= ceiling
        assert max(waits) > 0.8 * ceiling  # jittered over the whole range, not a constant
    assert all(2.0 <= backoff(1, 2.0, settings, rng) <= 2.1 for _ in range(100))  # at least Retry-After
    assert backoff(1, 3600.0, settings, rng) <= 10.1  # capped


# --- request template -----------------------------------------------------------------------


def test_template_builds_path_query_and_body_from_record_fields():
    template = RequestTemplate(
        method="post",
        path="/v1/companies/{domain}",
        query_fields={"country": "cc"},
        body_fields={"name": "name", "size": "employees"},
    )
    request = template.request({"domain": "a b/c.com", "cc": "DE", "name": "Ünï", "employees": 12, "other": 1})
    assert request.path == "/v1/companies/a%20b%2Fc.com"
    assert request.params == (("country", "DE"),)
    assert json.loads(request.body) == {"name": "Ünï", "size": 12}
    assert template.fields_used() == {"domain", "cc", "name", "employees"}


def test_template_sends_the_whole_record_without_body_fields_and_no_body_for_get():
    assert json.loads(RequestTemplate().request({"id": 1, "x": [1]}).body) == {"id": 1, "x": [1]}
    get = RequestTemplate(method="GET", path="/v1/enrich", query_fields={"id": "id"}).request({"id": 7})
    assert get.body is None and get.params == (("id", "7"),)


@pytest.mark.parametrize(
    "template",
    [RequestTemplate(path="/v1/{missing}"), RequestTemplate(query_fields={"q": "missing"}), RequestTemplate(body_fields={"q": "missing"})],
)
def test_record_without_a_template_field_is_a_record_error(template):
    with pytest.raises(RecordError, match="no field 'missing'"):
        template.request({"id": 1})


def test_response_fields_follow_dotted_paths_and_declared_types():
    template = RequestTemplate(
        response_fields={"score": "data.score", "n": "data.n", "raw": "data", "missing": "data.nope.deeper"},
        response_types={"score": "float64", "n": "int64", "raw": "json"},
    )
    fields = template.fields_of({"data": {"score": 3, "n": 4.0}})
    assert fields == {"score": 3.0, "n": 4, "raw": '{"score":3,"n":4.0}', "missing": None}
    with pytest.raises(ResponseError, match="'n' is \"four\", not int64"):
        template.fields_of({"data": {"n": "four"}})
    with pytest.raises(ResponseError, match="not int64"):
        template.fields_of({"data": {"n": True}})  # a JSON boolean is not a number


def test_batch_requests_and_answers():
    template = RequestTemplate(batch_size=2, body_fields={"id": "id"})
    request = template.batch_request([template.body_of({"id": 1}), template.body_of({"id": 2})])
    assert request.path == "/v1/enrich/batch" and json.loads(request.body) == {"records": [{"id": 1}, {"id": 2}]}
    assert template.batch_answers({"results": [1, 2]}, 2) == [1, 2]
    with pytest.raises(ResponseError, match="a batch of 3 records was answered with 2 results"):
        template.batch_answers({"results": [1, 2]}, 3)


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        ({"path": "v1"}, "must start with '/'"),
        ({"batch_size": 0}, "at least 1"),
        ({"method": "GET", "batch_size": 5}, "has none"),
        ({"response_types": {"x": "date"}}, "not one of"),
    ],
)
def test_template_settings_are_checked(kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        RequestTemplate(**kwargs)


# --- latency percentiles ------------------------------------------------------------------


def test_latency_percentiles_are_within_the_histograms_resolution():
    from engine.enrichment.stats import LatencyHistogram

    histogram = LatencyHistogram()
    rng = random.Random(3)
    values = [rng.uniform(0.001, 0.080) for _ in range(5000)] + [rng.uniform(0.2, 2.0) for _ in range(100)]
    for value in values:
        histogram.add(value)
    values.sort()
    for p in (50, 95, 99):
        exact = values[max(0, int(len(values) * p / 100) - 1)]
        assert exact <= histogram.percentile(p) <= max(exact * 1.02, exact + 1e-4) + 1e-9
    assert LatencyHistogram().percentile(50) is None
