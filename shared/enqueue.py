"""Putting download jobs on ``recording-downloads``, all or nothing as far as the caller knows.

Every path that learns of a finished recording (the webhook, a recordResponse reply that was
already final) puts its job on the queue here: concurrently, under one deadline, creating the
queue if a fresh account does not have it yet. What is not confirmed by the deadline counts as
refused, and the caller answers so that the sender retries (a late duplicate is harmless: the
worker downloads each recording once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.queue_jobs import create_missing_queue, send_job
from shared.queues import DOWNLOAD_QUEUE, JOB_TIME_TO_LIVE

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient

    from shared.jobs import DownloadJob

# Past this the sender is better served by a 503 and a retry than by waiting on the queue
# (the storage client's own timeouts and retries can add up to much more).
ENQUEUE_DEADLINE_SECONDS = 8.0


class NotStored(Exception):
    """A notification's effect could not be stored: the sender must send it again (503).

    The message is safe to return to a caller.
    """


class QueueUnavailable(NotStored):
    """Some download job could not be queued."""


@dataclass
class Enqueued:
    """Which jobs are on the queue, and why the others are not."""

    sent: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)

    def raise_if_refused(self, total: int) -> None:
        if self.refused:
            raise QueueUnavailable(
                f"{len(self.refused)} of {total} download job(s) could not be queued; retry later"
            )


def describe_error(error: BaseException) -> str:
    """Type and storage error code only: SDK messages can be long and carry request details."""
    code = getattr(error, "error_code", None)
    return f"{type(error).__name__}({code})" if code else type(error).__name__


async def enqueue_jobs(
    queue: QueueClient,
    jobs: Sequence[DownloadJob],
    *,
    deadline: float = ENQUEUE_DEADLINE_SECONDS,
    on_missing_queue: Callable[[], Awaitable[object]] | None = None,
) -> Enqueued:
    """Send every job concurrently; indexes of ``jobs`` say which were sent and which refused.

    A queue that does not exist is created, after ``on_missing_queue`` (the webhook provisions
    the whole account there: a missing queue means a fresh one), and the send tried again.
    """
    time_to_live = int(JOB_TIME_TO_LIVE.total_seconds())
    creating = asyncio.Lock()
    created = False

    async def create_queue_once() -> None:
        nonlocal created
        async with creating:
            if not created:
                if on_missing_queue is not None:
                    await on_missing_queue()
                await create_missing_queue(queue)
                created = True

    result = Enqueued()

    async def settle(index: int, job: DownloadJob) -> None:
        try:
            await send_job(
                queue,
                job,
                queue_name=DOWNLOAD_QUEUE,
                time_to_live=time_to_live,
                create_queue=create_queue_once,
            )
        except Exception as error:  # any failure means "not on the queue"
            result.refused[index] = describe_error(error)
        else:
            result.sent.append(index)

    try:
        async with asyncio.timeout(deadline):
            await asyncio.gather(*(settle(index, job) for index, job in enumerate(jobs)))
    except TimeoutError:
        pass  # whatever is not confirmed by now is refused
    for index in range(len(jobs)):
        if index not in result.sent:
            result.refused.setdefault(index, f"no answer within {deadline} s")
    result.sent.sort()
    return result
