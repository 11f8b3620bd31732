"""The upload webhook (issue 5, item 6) against a real HTTP receiver on a loopback port that
checks the signature: retries on 5xx and timeouts, none on 4xx, one accepted delivery."""

import json

import pytest

from engine.catalog.webhook import COMPLETED, deliver, event_body, idempotency_key, redact, sign, verify
from local_services.webhook_receiver import webhook_receiver

SECRET = "s3cret-for-tests"


def send(receiver, body=None, **kwargs):
    body = body or event_body(COMPLETED, {"id": "u1"}, {"inserted": 3})
    waits = []
    delivery = deliver(receiver.url, SECRET, COMPLETED, body, idempotency_key(COMPLETED, "u1"),
                       backoff_seconds=0.01, sleep=waits.append, **kwargs)
    return delivery, waits


def test_signature_is_hmac_sha256_of_the_exact_body():
    body = b'{"a":1}'
    assert sign(SECRET, body) == "sha256=" + __import__("hmac").new(SECRET.encode(), body, "sha256").hexdigest()
    assert verify(SECRET, body, sign(SECRET, body))
    assert not verify(SECRET, body + b" ", sign(SECRET, body)) and not verify("other", body, sign(SECRET, body))
    assert not verify(SECRET, body, None)


def test_two_500s_then_one_accepted_delivery_with_a_valid_signature():
    with webhook_receiver(SECRET, script=[500, 500]) as receiver:
        delivery, waits = send(receiver)
        assert receiver.wait_for(1)
    assert delivery.delivered and delivery.attempts == 3 and delivery.status == 200
    assert [a.status for a in receiver.attempts] == [500, 500, 200]
    assert [a.attempt for a in receiver.attempts] == [1, 2, 3]
    assert all(a.signature_valid for a in receiver.attempts)
    assert {a.idempotency_key for a in receiver.attempts} == {"upload.completed:u1"}
    assert len(receiver.accepted) == 1 and receiver.accepted[0].body["data"] == {"inserted": 3}
    assert len(waits) == 2 and waits[1] > waits[0]  # exponential backoff


def test_a_timeout_is_retried():
    with webhook_receiver(SECRET, hold_seconds=[5.0]) as receiver:
        delivery, waits = send(receiver, timeout_seconds=0.3)
        receiver.release_held()
        assert receiver.wait_for(1)
    assert delivery.delivered and delivery.attempts == 2 and len(waits) == 1


def test_a_4xx_is_not_retried_and_the_reason_is_kept():
    with webhook_receiver(SECRET, script=[422]) as receiver:
        delivery, waits = send(receiver)
    assert not delivery.delivered and delivery.attempts == 1 and delivery.status == 422 and waits == []
    assert delivery.error == "HTTP 422"


def test_a_wrong_secret_is_refused_by_the_receiver():
    with webhook_receiver("another secret") as receiver:
        body = event_body(COMPLETED, {"id": "u1"}, {})
        delivery = deliver(receiver.url, SECRET, COMPLETED, body, "k", backoff_seconds=0.01, sleep=lambda s: None)
    assert not delivery.delivered and delivery.status == 401 and receiver.accepted == []


def test_giving_up_after_the_last_attempt():
    with webhook_receiver(SECRET, script=[503] * 10) as receiver:
        delivery, waits = send(receiver, max_attempts=3)
    assert not delivery.delivered and delivery.attempts == 3 and len(receiver.attempts) == 3 and len(waits) == 2


def test_a_second_delivery_of_the_same_event_is_not_accepted_twice():
    with webhook_receiver(SECRET) as receiver:
        body = event_body(COMPLETED, {"id": "u1"}, {"inserted": 1})
        for _ in range(2):
            assert send(receiver, body)[0].delivered
    assert len(receiver.attempts) == 2 and len(receiver.accepted) == 1


def test_nothing_reaches_a_closed_port_and_the_error_says_so():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    delivery = deliver(f"http://127.0.0.1:{port}/x", SECRET, COMPLETED, b"{}", "k", max_attempts=2,
                       backoff_seconds=0.01, sleep=lambda s: None)
    assert not delivery.delivered and delivery.attempts == 2 and "ConnectionRefusedError" in delivery.error


def test_the_body_is_json_with_the_event_and_urls_are_redacted():
    body = json.loads(event_body(COMPLETED, {"id": "u1"}, {"rows": 2}))
    assert body["event"] == COMPLETED and body["upload"] == {"id": "u1"} and body["data"] == {"rows": 2}
    assert redact("https://user:pw@hooks.example:8443/in?token=abc") == "https://hooks.example:8443/in"


@pytest.mark.parametrize("status", [408, 429, 502])
def test_retried_statuses(status):
    with webhook_receiver(SECRET, script=[status]) as receiver:
        delivery, _ = send(receiver)
    assert delivery.delivered and delivery.attempts == 2


def test_the_sender_sends_nothing_without_a_url_and_refuses_a_url_without_a_secret():
    import dagster as dg

    from resources.webhook import WebhookSender

    assert WebhookSender().send("upload.completed", "u1", {}, {}) is None
    with pytest.raises(dg.Failure, match="without a secret to sign with"):
        WebhookSender(url="http://127.0.0.1:9/hook").send("upload.completed", "u1", {}, {})
    with pytest.raises(dg.Failure, match="without a secret to sign with"):
        WebhookSender(url="http://127.0.0.1:9/hook").deliver_body("upload.completed", "k", b"{}")
