"""Retention: the cleanup run that enforces how long recordings, tokens and ledger rows live.

Graph's terms forbid keeping call media, and poisoned download jobs still hold access tokens, so
one timer run does four bounded steps, each safe to run on two instances at once:

1. delete the recordings whose ``expiresAt`` index tag has passed (a tag query, so the cost grows
   with the number of expired recordings, never with the number stored) and mark them ``expired``
   (one ETag-guarded merge per row, no read per row);
2. purge poisoned download jobs older than a few minutes, recording each failure first;
3. settle operations left ``requested``/``running`` long after any completion could come as
   ``abandoned``;
4. delete ledger rows (operations and claims) older than the ledger horizon.

Every step stops at its limit; whatever is left is found again by the next run (continuation by
re-query, no cursor to keep). Ledger transitions are forward-only and deleting something already
deleted is success, so overlapping runs converge on the same state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

# The blob convention (name, expiresAt tag) is the download worker's: one definition, in store.
from shared.download.store import (
    EXPIRES_AT_TAG,
    format_tag_time,
    ids_from_blob_name,
)
from shared.jobs import DownloadJob, InvalidJobError
from shared.ledger import (
    NO_COMPLETION_REASON,
    POISONED_REASON,
    ROW_KIND_CLAIM,
    ROW_KIND_OPERATION,
    OperationLedger,
    OperationStatus,
    job_result,
    table_key,
)

if TYPE_CHECKING:
    from azure.core.pipeline import PipelineRequest
    from azure.data.tables.aio import TableClient
    from azure.storage.blob.aio import ContainerClient
    from azure.storage.queue import QueueMessage
    from azure.storage.queue.aio import QueueClient

    from shared.settings import Settings

log = logging.getLogger(__name__)

BATCH_DELETE_MAX = 256  # the Blob Batch API's limit per request

_LEDGER_CONCURRENCY = 16
# A young poison message this run received is handed straight back; the timeout only matters if
# that hand-back fails, and then the message reappears well before the next run.
_POISON_VISIBILITY_SECONDS = 30
_POISON_PAGE = 32  # the Queue service's maximum per receive
# The column the ledger stamps when a row becomes expired (its ``{Status}At`` convention).
EXPIRED_AT = "ExpiredAt"


@dataclass(frozen=True)
class CleanupLimits:
    """The most each step does in one run (the rest waits for the next run)."""

    expired_recordings: int = 2048
    poison_messages: int = 256
    abandoned_operations: int = 256
    ledger_rows: int = 1024


@dataclass
class CleanupSummary:
    """Counts of what one run did; logged as one line and returned."""

    recordings_found_expired: int = 0
    recordings_deleted: int = 0
    recordings_already_gone: int = 0
    recordings_not_deleted: int = 0
    rows_marked_expired: int = 0
    poison_messages_purged: int = 0
    poison_failures_recorded: int = 0
    poison_messages_unreadable: int = 0
    poison_messages_kept: int = 0
    operations_abandoned: int = 0
    ledger_rows_deleted: int = 0
    claim_rows_deleted: int = 0
    errors: int = 0
    limits_reached: list[str] = field(default_factory=list)
    failed_steps: list[str] = field(default_factory=list)

    def log_fields(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return " ".join(
            f"{name}={','.join(value) or '-' if isinstance(value, list) else value}"
            for name, value in self.log_fields().items()
        )


def expired_filter(now: datetime) -> str:
    """The blob index tag query for recordings whose retention has ended at ``now``."""
    return f"\"{EXPIRES_AT_TAG}\" < '{format_tag_time(now, round_up=False)}'"


def _portable_batch_boundary(request: PipelineRequest[Any]) -> None:
    # The SDK lets the email package pick the multipart boundary ("===============123=="); Azurite
    # cuts the Content-Type at the first "=" and rejects every batch. A boundary without "=" is
    # equally valid for Azure (RFC 2046), so the batch works against both. This hook runs before
    # the request is signed.
    http_request = request.http_request
    content_type = http_request.headers.get("Content-Type", "")
    prefix = "multipart/mixed; boundary="
    if not content_type.startswith(prefix):
        return
    old = content_type[len(prefix) :]
    new = f"batch_{uuid.uuid4()}"
    http_request.set_bytes_body(http_request.body.replace(old.encode(), new.encode()))
    http_request.headers["Content-Type"] = prefix + new


async def _bounded_gather(
    calls: Sequence[Callable[[], Awaitable[Any]]], *, concurrency: int = _LEDGER_CONCURRENCY
) -> list[Any]:
    """Run ``calls`` with at most ``concurrency`` in flight; exceptions are returned, not raised."""
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(call) for call in calls), return_exceptions=True))


async def expire_recordings(
    container: ContainerClient,
    ledger: OperationLedger,
    *,
    now: datetime,
    limit: int,
    summary: CleanupSummary,
) -> None:
    """Delete recordings whose ``expiresAt`` tag has passed, then mark their rows ``expired``."""
    names: list[str] = []
    pages = container.find_blobs_by_tags(
        expired_filter(now), results_per_page=min(limit, 5000)
    ).by_page()
    async for page in pages:
        async for blob in page:
            names.append(blob.name)
            if len(names) >= limit:
                break
        if len(names) >= limit:
            summary.limits_reached.append("expired_recordings")
            break
    summary.recordings_found_expired += len(names)

    gone: list[str] = []
    for start in range(0, len(names), BATCH_DELETE_MAX):
        chunk = names[start : start + BATCH_DELETE_MAX]
        responses = await container.delete_blobs(
            *chunk,
            delete_snapshots="include",
            raise_on_any_failure=False,
            raw_request_hook=_portable_batch_boundary,
        )
        statuses = [response.status_code async for response in responses]
        if len(statuses) != len(chunk):
            # The service refused the batch as a whole (one error part): nothing was deleted.
            log.error(
                "cleanup: batch delete of %d recordings refused (status %s)",
                len(chunk),
                statuses[:1],
            )
            summary.recordings_not_deleted += len(chunk)
            summary.errors += 1
            continue
        for name, status in zip(chunk, statuses, strict=True):
            if 200 <= status < 300:
                summary.recordings_deleted += 1
                gone.append(name)
            elif status == 404:  # another run (or the lifecycle rule) deleted it first
                summary.recordings_already_gone += 1
                gone.append(name)
            else:
                summary.recordings_not_deleted += 1
                summary.errors += 1
                log.error("cleanup: could not delete recording blob=%s status=%d", name, status)

    # The row says expired only once the blob is really gone; a failed delete keeps its tag, so
    # the next run finds it again.
    targets: list[tuple[str, str, str]] = []
    for name in gone:
        ids = ids_from_blob_name(name)
        if ids is None:
            log.warning("cleanup: deleted blob=%s has no call/operation id in its name", name)
            continue
        targets.append((name, *ids))
    await mark_rows_expired(ledger, targets, now=now, limit=limit, summary=summary)


async def _stored_rows_past_expiry(
    table: TableClient, *, now: datetime, limit: int
) -> dict[tuple[str, str], str]:
    """ETags of ``stored`` rows whose ``ExpiresAt`` has passed: one query page per 1 000 rows."""
    etags: dict[tuple[str, str], str] = {}
    query = "Kind eq @kind and Status eq @stored and ExpiresAt lt @now"
    parameters = {
        "kind": ROW_KIND_OPERATION,
        "stored": OperationStatus.STORED.value,
        "now": now,
    }
    async for entity in table.query_entities(
        query,
        parameters=parameters,
        results_per_page=min(limit, 1000),
        select=["PartitionKey", "RowKey"],
    ):
        etag = entity.metadata.get("etag")
        if etag:
            etags[(entity["PartitionKey"], entity["RowKey"])] = etag
        if len(etags) >= limit:
            break
    return etags


async def mark_rows_expired(
    ledger: OperationLedger,
    targets: Sequence[tuple[str, str, str]],
    *,
    now: datetime,
    limit: int,
    summary: CleanupSummary,
) -> None:
    """Mark the rows of deleted recordings ``expired``: about one table request per row.

    One query reads the ETags of every ``stored`` row past its expiry (1 000 per page); each of
    those rows then gets one merge guarded by its ETag (If-Match), so a row that changed since
    (another run marked it, or a later status such as an erasure was written) is never
    overwritten: the write fails with 412 and the row goes through the ledger's read-then-write
    ``mark_expired``, which only ever moves a row forward. Rows the query did not return (no row,
    or a row that never reached ``stored``) take that path directly. Writes run 16 at a time.
    """
    if not targets:
        return
    # The ledger's table client (OperationLedger keeps it private; a public ``table`` property
    # on the ledger would make this read cleaner).
    table: TableClient = ledger._table
    try:
        etags = await _stored_rows_past_expiry(table, now=now, limit=max(limit, len(targets)))
    except Exception as error:
        # Without the ETags every row still gets its guarded read-then-write below.
        log.warning("cleanup: ledger query for expired rows failed (%s)", type(error).__name__)
        etags = {}

    async def mark(call_id: str, operation_id: str) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        partition, row = table_key(call_id), table_key(operation_id)
        etag = etags.get((partition, row))
        if etag is not None:
            try:
                await table.update_entity(
                    {
                        "PartitionKey": partition,
                        "RowKey": row,
                        "Status": OperationStatus.EXPIRED.value,
                        "UpdatedAt": now,
                        EXPIRED_AT: now,
                    },
                    mode=UpdateMode.MERGE,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            except (ResourceModifiedError, ResourceNotFoundError):
                pass  # changed since the query: decide on a fresh read
            else:
                return True
        transition = await ledger.mark_expired(call_id, operation_id)
        return transition.changed

    results = await _bounded_gather(
        [functools.partial(mark, call_id, operation_id) for _, call_id, operation_id in targets]
    )
    for (name, call_id, operation_id), result in zip(targets, results, strict=True):
        if isinstance(result, BaseException):
            summary.errors += 1
            log.error(
                "cleanup: recording deleted but ledger not updated call_id=%s operation_id=%s (%s)",
                call_id,
                operation_id,
                type(result).__name__,
            )
            continue
        if result:
            summary.rows_marked_expired += 1
        log.info(
            "cleanup: recording expired call_id=%s operation_id=%s blob=%s",
            call_id,
            operation_id,
            name,
            extra={"call_id": call_id, "operation_id": operation_id},
        )


def _inserted_before(message: QueueMessage, cutoff: datetime) -> bool:
    inserted = message.inserted_on
    if inserted is None:
        return True  # no insertion time: treat as old rather than keep a token indefinitely
    if inserted.tzinfo is None:
        inserted = inserted.replace(tzinfo=UTC)
    return inserted < cutoff


async def _purge_one(
    poison_queue: QueueClient,
    ledger: OperationLedger,
    message: QueueMessage,
    summary: CleanupSummary,
) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        job: DownloadJob | None = DownloadJob.from_message(message.content)
    except InvalidJobError as error:
        # Nobody can act on it, and it may still hold a token: it goes, with a note in the log.
        job = None
        summary.poison_messages_unreadable += 1
        log.warning("cleanup: poison message id=%s unreadable (%s); deleting it", message.id, error)
    if job is not None:
        try:
            transition = await ledger.mark_failed(
                job.call_id, job.operation_id, POISONED_REASON, result=job_result(job)
            )
        except Exception as error:
            # Keep the message: the failure is not recorded yet, the next run tries again.
            summary.errors += 1
            summary.poison_messages_kept += 1
            log.error(
                "cleanup: could not record poisoned job call_id=%s operation_id=%s (%s)",
                job.call_id,
                job.operation_id,
                type(error).__name__,
                extra=job.log_fields(),
            )
            return
        if transition.changed:
            summary.poison_failures_recorded += 1
        log.info(
            "cleanup: poisoned download job purged call_id=%s operation_id=%s status=%s",
            job.call_id,
            job.operation_id,
            transition.record.status.value,
            extra=job.log_fields(),
        )
    # Not found: an overlapping run deleted it, or the receipt lapsed and it comes round again.
    with contextlib.suppress(ResourceNotFoundError):
        await poison_queue.delete_message(message)
    summary.poison_messages_purged += 1


async def purge_poison_messages(
    poison_queue: QueueClient,
    ledger: OperationLedger,
    *,
    now: datetime,
    max_age: timedelta,
    limit: int,
    summary: CleanupSummary,
) -> None:
    """Record and delete poisoned download jobs inserted more than ``max_age`` ago."""
    cutoff = now - max_age
    received = 0
    pages = poison_queue.receive_messages(
        messages_per_page=min(_POISON_PAGE, limit),
        visibility_timeout=_POISON_VISIBILITY_SECONDS,
        max_messages=limit,
    ).by_page()
    async for page in pages:
        reached_young = False
        async for message in page:
            received += 1
            if _inserted_before(message, cutoff):
                await _purge_one(poison_queue, ledger, message, summary)
                continue
            reached_young = True
            summary.poison_messages_kept += 1
            # Hand it straight back (receiving hid it) so the queue looks untouched.
            # By id and receipt: passing the message would re-send its (decoded) content.
            await poison_queue.update_message(
                message.id, pop_receipt=message.pop_receipt, visibility_timeout=0
            )
        # The queue is roughly oldest-first: after a young message the rest are young too.
        if reached_young:
            break
    if received >= limit:
        summary.limits_reached.append("poison_messages")


async def abandon_stale_operations(
    ledger: OperationLedger,
    *,
    now: datetime,
    after: timedelta,
    limit: int,
    summary: CleanupSummary,
) -> None:
    """Settle operations still requested/running ``after`` their start as ``abandoned``."""
    stale = await ledger.query(
        "( Status eq @running and RunningAt lt @cutoff ) or "
        "( Status eq @requested and RequestedAt lt @cutoff )",
        {
            "running": OperationStatus.RUNNING.value,
            "requested": OperationStatus.REQUESTED.value,
            "cutoff": now - after,
        },
        limit=limit,
    )
    if len(stale) >= limit:
        summary.limits_reached.append("abandoned_operations")
    results = await _bounded_gather(
        [
            functools.partial(
                ledger.mark_abandoned, record.call_id, record.operation_id, NO_COMPLETION_REASON
            )
            for record in stale
        ]
    )
    for record, result in zip(stale, results, strict=True):
        fields = {"call_id": record.call_id, "operation_id": record.operation_id}
        if isinstance(result, BaseException):
            summary.errors += 1
            log.error(
                "cleanup: could not settle call_id=%s operation_id=%s as abandoned (%s)",
                record.call_id,
                record.operation_id,
                type(result).__name__,
                extra=fields,
            )
        elif result.changed:
            summary.operations_abandoned += 1
            log.info(
                "cleanup: operation abandoned call_id=%s operation_id=%s was=%s",
                record.call_id,
                record.operation_id,
                record.status.value,
                extra=fields,
            )


async def trim_ledger(
    ledger: OperationLedger,
    *,
    now: datetime,
    horizon: timedelta,
    limit: int,
    summary: CleanupSummary,
) -> None:
    """Delete ledger rows (operations and claims) not updated within ``horizon``."""
    removed = await ledger.remove_stale(now - horizon, limit=limit)
    claims = removed.pop(ROW_KIND_CLAIM, 0)
    rows = sum(removed.values())
    summary.claim_rows_deleted += claims
    summary.ledger_rows_deleted += rows
    if rows + claims >= limit:
        summary.limits_reached.append("ledger_rows")


async def run_cleanup(
    *,
    container: ContainerClient,
    ledger: OperationLedger,
    poison_queue: QueueClient,
    settings: Settings,
    clock: Callable[[], datetime],
    limits: CleanupLimits | None = None,
) -> CleanupSummary:
    """One cleanup run: every step, each bounded, then one summary log line."""
    limits = limits or CleanupLimits()
    now = clock()
    summary = CleanupSummary()
    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        (
            "expire_recordings",
            lambda: expire_recordings(
                container, ledger, now=now, limit=limits.expired_recordings, summary=summary
            ),
        ),
        (
            "purge_poison_messages",
            lambda: purge_poison_messages(
                poison_queue,
                ledger,
                now=now,
                max_age=timedelta(minutes=settings.poison_message_max_age_minutes),
                limit=limits.poison_messages,
                summary=summary,
            ),
        ),
        (
            "abandon_stale_operations",
            lambda: abandon_stale_operations(
                ledger,
                now=now,
                after=timedelta(minutes=settings.abandon_running_after_minutes),
                limit=limits.abandoned_operations,
                summary=summary,
            ),
        ),
        (
            "trim_ledger",
            lambda: trim_ledger(
                ledger,
                now=now,
                horizon=timedelta(days=settings.ledger_retention_days),
                limit=limits.ledger_rows,
                summary=summary,
            ),
        ),
    ]
    for name, step in steps:
        # One step failing (storage hiccup) must not stop the others: the tokens in the poison
        # queue and the expired recordings are independent obligations.
        try:
            await step()
        except Exception as error:
            summary.errors += 1
            summary.failed_steps.append(name)
            # Type and service error code only: an SDK error's text can quote the response
            # body, and a queue response holds message contents (access tokens).
            log.error(
                "cleanup: step %s failed (%s, code=%s)",
                name,
                type(error).__name__,
                getattr(error, "error_code", None),
            )
    level = logging.WARNING if summary.errors else logging.INFO
    log.log(level, "cleanup: %s", summary.describe(), extra=summary.log_fields())
    return summary
