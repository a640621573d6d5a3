"""Queue triggers against a real Azurite, with the host.json semantics of conftest.SAMPLE_QUEUES."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import azure.functions as func
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from devtools.azurite import Azurite
from devtools.localhost import LocalFunctionsHost
from devtools.localhost.queues import MessageDecodingError, PollingBackoff, decode_body
from tests.localhost import sample_app
from tests.localhost.conftest import SAMPLE_QUEUES, wait_until


@pytest.fixture
def raw_queue(azurite: Azurite, queue_name: str) -> Iterator[QueueClient]:
    """The sample queue, written as raw text (tests encode what they send themselves)."""
    with QueueClient.from_connection_string(azurite.connection_string, queue_name) as client:
        yield client


@pytest.fixture
def encoded_queue(azurite: Azurite, queue_name: str) -> Iterator[QueueClient]:
    """The sample queue, written the way the app writes it (base64, like the trigger reads)."""
    with QueueClient.from_connection_string(
        azurite.connection_string, queue_name, message_encode_policy=TextBase64EncodePolicy()
    ) as client:
        yield client


@pytest.fixture
def poison_queue(azurite: Azurite, queue_name: str) -> Iterator[QueueClient]:
    with QueueClient.from_connection_string(
        azurite.connection_string, f"{queue_name}-poison"
    ) as client:
        yield client


def deliveries(message_id: str) -> list[dict[str, Any]]:
    return [d for d in sample_app.queue_deliveries if d["id"] == message_id]


def queue_is_empty(client: QueueClient) -> bool:
    # Counts invisible messages too: empty means deleted, not merely being processed.
    return client.get_queue_properties().approximate_message_count == 0


def poison_messages(client: QueueClient) -> list[Any]:
    try:
        return list(client.peek_messages(max_messages=32))
    except Exception:  # the poison queue does not exist yet
        return []


def test_queue_is_created_and_a_message_processed_once_then_deleted(
    host: LocalFunctionsHost, encoded_queue: QueueClient
) -> None:
    wait_until(lambda: _exists(encoded_queue), what="the host to create the queue")
    sent = encoded_queue.send_message(json.dumps({"job": "one"}))

    wait_until(lambda: deliveries(sent.id), what="the delivery")
    wait_until(lambda: queue_is_empty(encoded_queue), what="the message to be deleted")
    wait_until(
        lambda: host.queue_listener("record_message").outcomes["succeeded"] == 1,
        what="the outcome",
    )
    # A few more polls happen (the back-off is at most 0.4 s here) without a second delivery.
    polls = len(host.queue_listener("record_message").poll_delays)
    wait_until(
        lambda: len(host.queue_listener("record_message").poll_delays) >= polls + 3,
        what="further polls",
    )
    [delivery] = deliveries(sent.id)
    message = delivery["message"]
    assert isinstance(message, func.QueueMessage)
    assert json.loads(message.get_body()) == {"job": "one"}
    assert message.dequeue_count == 1
    assert message.pop_receipt
    assert isinstance(message.insertion_time, datetime)
    assert isinstance(message.expiration_time, datetime)
    assert isinstance(message.time_next_visible, datetime)
    assert delivery["completed"]


def _exists(client: QueueClient) -> bool:
    try:
        client.get_queue_properties()
    except Exception:
        return False
    return True


def test_failure_makes_the_message_visible_again_with_a_higher_dequeue_count(
    host: LocalFunctionsHost, encoded_queue: QueueClient, poison_queue: QueueClient
) -> None:
    sent = encoded_queue.send_message(json.dumps({"fail_until": 1}))

    wait_until(lambda: any(d["completed"] for d in deliveries(sent.id)), what="the retry")
    wait_until(lambda: queue_is_empty(encoded_queue), what="the message to be deleted")
    seen = deliveries(sent.id)
    assert [d["dequeue_count"] for d in seen] == [1, 2]
    assert [d["completed"] for d in seen] == [False, True]
    # Redelivered within wait_until's 15 s although a fetched message is leased for
    # functionTimeout + 30 s (60 s here): the failure released it after visibilityTimeout.
    assert poison_messages(poison_queue) == []
    outcomes = host.queue_listener("record_message").outcomes
    assert (outcomes["retried"], outcomes["succeeded"], outcomes["poisoned"]) == (1, 1, 0)


def test_poison_after_max_dequeue_count_with_the_same_content(
    host: LocalFunctionsHost, raw_queue: QueueClient, poison_queue: QueueClient
) -> None:
    content = base64.b64encode(json.dumps({"fail_until": 99}).encode()).decode()
    sent = raw_queue.send_message(content)

    poisoned = wait_until(lambda: poison_messages(poison_queue), what="the poison message")
    wait_until(lambda: queue_is_empty(raw_queue), what="the original to be deleted")
    assert [p.content for p in poisoned] == [content]
    max_dequeue = SAMPLE_QUEUES["maxDequeueCount"]
    assert [d["dequeue_count"] for d in deliveries(sent.id)] == list(range(1, max_dequeue + 1))
    assert host.queue_listener("record_message").outcomes["poisoned"] == 1


def test_base64_is_decoded_before_the_function_sees_it(
    host: LocalFunctionsHost, raw_queue: QueueClient
) -> None:
    body = '{"name": "Zoë ☎"}'.encode()
    sent = raw_queue.send_message(base64.b64encode(body).decode())

    [delivery] = wait_until(lambda: deliveries(sent.id), what="the delivery")
    assert delivery["body"] == body


def test_a_message_that_is_not_base64_is_never_passed_on_and_ends_in_poison(
    host: LocalFunctionsHost, raw_queue: QueueClient, poison_queue: QueueClient
) -> None:
    raw_queue.send_message("this is not base64!")

    poisoned = wait_until(lambda: poison_messages(poison_queue), what="the poison message")
    assert [p.content for p in poisoned] == ["this is not base64!"]
    assert sample_app.queue_deliveries == []


def test_message_encoding_none_passes_the_text_as_is(
    make_host: Callable[..., LocalFunctionsHost], raw_queue: QueueClient
) -> None:
    with make_host(queues={**SAMPLE_QUEUES, "messageEncoding": "none"}):
        sent = raw_queue.send_message("plain text")
        [delivery] = wait_until(lambda: deliveries(sent.id), what="the delivery")
    assert delivery["body"] == b"plain text"


def test_a_batch_runs_concurrently_within_the_configured_bounds(
    make_host: Callable[..., LocalFunctionsHost], encoded_queue: QueueClient
) -> None:
    batch = SAMPLE_QUEUES["batchSize"]
    # The whole batch is on the queue before the host polls: a poll landing between two sends
    # would fetch part of it, and (above newBatchThreshold) the rest only once those finish.
    with contextlib.suppress(ResourceExistsError):
        encoded_queue.create_queue()
    for _ in range(batch):
        encoded_queue.send_message(json.dumps({"gather": batch}))
    make_host().start()

    wait_until(
        lambda: sum(d["completed"] for d in sample_app.queue_deliveries) == batch,
        what="the batch",
    )
    # Every invocation waited until the whole batch was in flight at once.
    assert sample_app.max_in_flight[0] == batch
    assert sample_app.max_in_flight[0] <= batch + SAMPLE_QUEUES["newBatchThreshold"]


def test_empty_queue_polling_backs_off_up_to_max_polling_interval(
    host: LocalFunctionsHost,
) -> None:
    listener = host.queue_listener("record_message")
    delays = wait_until(
        lambda: list(listener.poll_delays) if len(listener.poll_delays) >= 6 else None,
        what="six empty polls",
    )
    assert delays[:4] == pytest.approx([0.1, 0.2, 0.4, 0.4])
    assert max(delays) == pytest.approx(0.4)


def test_backoff_doubles_to_the_maximum_and_resets() -> None:
    backoff = PollingBackoff(timedelta(seconds=1))
    assert [backoff.next_delay() for _ in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1, 1])
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.1)


def test_decode_body() -> None:
    assert decode_body(base64.b64encode(b"\x00\xff").decode(), "base64") == b"\x00\xff"
    assert decode_body("café", "none") == "café".encode()
    with pytest.raises(MessageDecodingError):
        decode_body("not base64!", "base64")


def test_stop_waits_for_the_invocation_in_flight(
    make_host: Callable[..., LocalFunctionsHost], encoded_queue: QueueClient
) -> None:
    host = make_host().start()
    sent = encoded_queue.send_message(json.dumps({"hold": 0.5}))
    wait_until(lambda: deliveries(sent.id), what="the invocation to start")

    host.stop()

    [delivery] = deliveries(sent.id)
    assert delivery["completed"]
    assert queue_is_empty(encoded_queue)
