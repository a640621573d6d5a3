"""Queue triggers: poll a Storage queue with the semantics host.json ``extensions.queues`` sets.

A batch of up to ``batchSize`` messages is fetched whenever no more than ``newBatchThreshold`` are
in flight; each message runs concurrently. Success deletes the message; a failure makes it visible
again after ``visibilityTimeout``, and a failure at ``maxDequeueCount`` moves the message, content
unchanged, to ``<queue>-poison``. An empty queue is polled less and less often, from 100 ms up to
``maxPollingInterval``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from azure.functions.queue import QueueMessage as FunctionQueueMessage

from devtools.localhost.discovery import QueueFunction, invoke
from devtools.localhost.settings import HostConfigurationError, QueueOptions

if TYPE_CHECKING:
    from azure.storage.queue import QueueMessage as StorageQueueMessage
    from azure.storage.queue.aio import QueueClient

logger = logging.getLogger(__name__)

MIN_POLLING_INTERVAL = timedelta(milliseconds=100)
POISON_SUFFIX = "-poison"
# Explicit timeouts on every Storage call; polls retry on their own through the back-off.
_CLIENT_OPTIONS: dict[str, Any] = {
    "connection_timeout": 5,
    "read_timeout": 20,
    "retry_total": 2,
    "retry_backoff_factor": 0.2,
    "retry_backoff_max": 2,
}


class MessageDecodingError(ValueError):
    """A message is not in the encoding host.json ``messageEncoding`` declares."""


def connection_string(connection: str, environ: Mapping[str, str]) -> str:
    """The connection string the trigger's ``connection`` setting names (``AzureWebJobs`` prefix too)."""
    for name in (connection, f"AzureWebJobs{connection}"):
        value = environ.get(name)
        if value:
            return value
    if environ.get(f"{connection}__queueServiceUri"):
        raise HostConfigurationError(
            f"{connection}: identity-based connections (__queueServiceUri) are not supported by "
            "the local host; set a connection string (Azurite) for local runs"
        )
    raise HostConfigurationError(f"{connection}: app setting not set (a queue connection string)")


class PollingBackoff:
    """Delay before the next poll of an empty queue: doubles from ``minimum`` up to ``maximum``."""

    def __init__(self, maximum: timedelta, minimum: timedelta = MIN_POLLING_INTERVAL) -> None:
        self._minimum = min(minimum, maximum).total_seconds()
        self._maximum = maximum.total_seconds()
        self._next = self._minimum

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._maximum)
        return delay

    def reset(self) -> None:
        self._next = self._minimum


def decode_body(content: str, encoding: str) -> bytes:
    if encoding == "none":
        return content.encode("utf-8")
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as error:
        raise MessageDecodingError("message content is not valid base64") from error


def to_function_message(message: StorageQueueMessage, body: bytes) -> FunctionQueueMessage:
    # The worker's own concrete class (azure.functions.QueueMessage lacks the delivery fields).
    return FunctionQueueMessage(  # type: ignore[no-untyped-call]
        id=message.id,
        body=body,
        dequeue_count=message.dequeue_count,
        expiration_time=message.expires_on,
        insertion_time=message.inserted_on,
        time_next_visible=message.next_visible_on,
        pop_receipt=message.pop_receipt,
    )


class QueueListener:
    """Feeds one queue-triggered function; ``run()`` until ``stop()``, then drains."""

    def __init__(
        self,
        function: QueueFunction,
        options: QueueOptions,
        *,
        connection: str,
        function_timeout: timedelta,
        drain_timeout: timedelta = timedelta(seconds=30),
    ) -> None:
        self.function = function
        self.options = options
        self._connection = connection
        self._function_timeout = function_timeout
        self._drain_timeout = drain_timeout
        # A fetched message stays invisible while it runs: as long as an invocation may last.
        self._lease_seconds = int(function_timeout.total_seconds()) + 30
        self._stopping = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._backoff = PollingBackoff(options.max_polling_interval)
        self._queue: QueueClient | None = None
        self._poison: QueueClient | None = None
        self._poison_ready = asyncio.Lock()
        # Set once the queue exists (or its creation has failed once): start() waits for it.
        self.ready = asyncio.Event()
        # Observability for tests and the CLI; bounded.
        self.poll_delays: collections.deque[float] = collections.deque(maxlen=256)
        self.outcomes: collections.Counter[str] = collections.Counter()

    @property
    def queue_name(self) -> str:
        return self.function.queue_name

    @property
    def poison_queue_name(self) -> str:
        return f"{self.function.queue_name}{POISON_SUFFIX}"

    def _client(self, name: str) -> QueueClient:
        from azure.storage.queue.aio import QueueClient

        # No encode/decode policy: the raw text is what a poison copy must keep; the body is
        # decoded here according to messageEncoding.
        return QueueClient.from_connection_string(self._connection, name, **_CLIENT_OPTIONS)

    async def _ensure_queue(self, client: QueueClient) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            await client.create_queue()

    async def _poison_queue(self) -> QueueClient:
        async with self._poison_ready:
            if self._poison is None:
                poison = self._client(self.poison_queue_name)
                await self._ensure_queue(poison)
                self._poison = poison
            return self._poison

    async def run(self) -> None:
        self._queue = self._client(self.queue_name)
        try:
            await self._poll_until_stopped(self._queue)
            await self._drain()
        finally:
            await self._queue.close()
            if self._poison is not None:
                await self._poison.close()

    def stop(self) -> None:
        self._stopping.set()

    async def _poll_until_stopped(self, queue: QueueClient) -> None:
        queue_ready = False
        while not self._stopping.is_set():
            if len(self._in_flight) > self.options.new_batch_threshold:
                await self._wait_for_capacity()
                continue
            try:
                if not queue_ready:
                    try:
                        await self._ensure_queue(queue)
                    finally:
                        self.ready.set()
                    queue_ready = True
                messages = [
                    message
                    async for message in queue.receive_messages(
                        messages_per_page=self.options.batch_size,
                        max_messages=self.options.batch_size,
                        visibility_timeout=self._lease_seconds,
                    )
                ]
            except Exception as error:
                logger.warning(
                    "queue function=%s queue=%s outcome=poll_failed error=%s",
                    self.function.name,
                    self.queue_name,
                    type(error).__name__,
                )
                messages = []
            if messages:
                self._backoff.reset()
                for message in messages:
                    task = asyncio.create_task(
                        self._process(message), name=f"{self.function.name}:{message.id}"
                    )
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)
                continue
            delay = self._backoff.next_delay()
            self.poll_delays.append(delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _wait_for_capacity(self) -> None:
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({stopping, *self._in_flight}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()

    async def _drain(self) -> None:
        if not self._in_flight:
            return
        pending = set(self._in_flight)
        _, still_running = await asyncio.wait(pending, timeout=self._drain_timeout.total_seconds())
        for task in still_running:
            # Its message becomes visible again when its lease ends: delivered again, not lost.
            task.cancel()
        if still_running:
            logger.warning(
                "queue function=%s queue=%s outcome=drain_timeout cancelled=%d",
                self.function.name,
                self.queue_name,
                len(still_running),
            )
            await asyncio.gather(*still_running, return_exceptions=True)

    async def _process(self, message: StorageQueueMessage) -> None:
        assert self._queue is not None
        started = time.perf_counter()
        dequeue_count = message.dequeue_count or 1
        if dequeue_count > self.options.max_dequeue_count:
            # Delivered more often than allowed without a recorded failure (a host crashed
            # mid-invocation): the real host poisons it before running it again.
            await self._move_to_poison(message, started, reason="dequeue_count_exceeded")
            return
        try:
            body = decode_body(message.content or "", self.options.message_encoding)
            await invoke(
                self.function.user_function,
                {self.function.argument: to_function_message(message, body)},
                function_timeout=self._function_timeout,
            )
        except Exception as error:
            if dequeue_count >= self.options.max_dequeue_count:
                logger.warning(
                    "queue function=%s message_id=%s dequeue_count=%d outcome=failed error=%s",
                    self.function.name,
                    message.id,
                    dequeue_count,
                    type(error).__name__,
                    exc_info=True,
                )
                await self._move_to_poison(message, started, reason=type(error).__name__)
            else:
                await self._release(message, started, error)
            return
        try:
            await self._queue.delete_message(message.id, message.pop_receipt)
        except Exception as error:
            logger.warning(
                "queue function=%s message_id=%s outcome=delete_failed error=%s",
                self.function.name,
                message.id,
                type(error).__name__,
            )
            return
        self.outcomes["succeeded"] += 1
        logger.info(
            "queue function=%s queue=%s message_id=%s dequeue_count=%d outcome=succeeded "
            "duration_ms=%.1f",
            self.function.name,
            self.queue_name,
            message.id,
            dequeue_count,
            (time.perf_counter() - started) * 1000,
        )

    async def _release(
        self, message: StorageQueueMessage, started: float, error: BaseException
    ) -> None:
        assert self._queue is not None
        visibility = int(self.options.visibility_timeout.total_seconds())
        try:
            await self._queue.update_message(
                message.id, message.pop_receipt, visibility_timeout=visibility
            )
        except Exception as update_error:
            # The lease still ends: the message comes back later, never lost.
            logger.warning(
                "queue function=%s message_id=%s outcome=release_failed error=%s",
                self.function.name,
                message.id,
                type(update_error).__name__,
            )
        self.outcomes["retried"] += 1
        logger.warning(
            "queue function=%s queue=%s message_id=%s dequeue_count=%d outcome=retry "
            "visible_in_s=%d error=%s duration_ms=%.1f",
            self.function.name,
            self.queue_name,
            message.id,
            message.dequeue_count,
            visibility,
            type(error).__name__,
            (time.perf_counter() - started) * 1000,
            exc_info=error,
        )

    async def _move_to_poison(
        self, message: StorageQueueMessage, started: float, *, reason: str
    ) -> None:
        assert self._queue is not None
        try:
            poison = await self._poison_queue()
            # Copy first, then delete: a failure in between leaves a duplicate, never a loss.
            await poison.send_message(message.content or "")
            await self._queue.delete_message(message.id, message.pop_receipt)
        except Exception as error:
            logger.error(
                "queue function=%s message_id=%s outcome=poison_failed error=%s",
                self.function.name,
                message.id,
                type(error).__name__,
            )
            return
        self.outcomes["poisoned"] += 1
        logger.error(
            "queue function=%s queue=%s message_id=%s dequeue_count=%d outcome=poisoned "
            "poison_queue=%s reason=%s duration_ms=%.1f",
            self.function.name,
            self.queue_name,
            message.id,
            message.dequeue_count,
            self.poison_queue_name,
            reason,
            (time.perf_counter() - started) * 1000,
        )
