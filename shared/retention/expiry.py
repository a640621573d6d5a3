"""Step 1: delete the recordings whose ``expiresAt`` tag has passed, and mark their rows ``expired``.

A tag query finds them (the cost grows with the number expired, never with the number stored);
batch deletes remove them; the ledger marks each row with one ETag-guarded merge.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.blob_layout import EXPIRES_AT_TAG, format_tag_time, ids_from_blob_name
from shared.graph.ids import normalize_id
from shared.ledger import OperationLedger
from shared.ledger.identity import IDENTITY_COLUMNS
from shared.logevents import log_event
from shared.retention.summary import BATCH_DELETE_MAX, CleanupSummary, for_each_row

if TYPE_CHECKING:
    from azure.core.pipeline import PipelineRequest
    from azure.storage.blob.aio import ContainerClient

    from shared.ledger import Transition

log = logging.getLogger("shared.retention")


def expired_filter(now: datetime) -> str:
    """The blob index tag query for recordings whose retention has ended at ``now``."""
    return f"\"{EXPIRES_AT_TAG}\" < '{format_tag_time(now, round_up=False)}'"


def portable_batch_boundary(request: PipelineRequest[Any]) -> None:
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
            raw_request_hook=portable_batch_boundary,
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
                log_event(
                    log,
                    "cleanup: recording not deleted",
                    level=logging.ERROR,
                    blob=name,
                    status=status,
                )

    # The row says expired only once the blob is really gone; a failed delete keeps its tag, so
    # the next run finds it again.
    targets: list[tuple[str, str, str]] = []
    for name in gone:
        ids = ids_from_blob_name(name)
        if ids is None:
            log_event(
                log,
                "cleanup: deleted blob names no call or operation",
                level=logging.WARNING,
                blob=name,
            )
            continue
        targets.append((name, *ids))
    await mark_rows_expired(ledger, targets, now=now, limit=limit, summary=summary)


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
    overwritten: the write fails with 412 and the ledger reads the row and decides again, only
    ever moving it forward. Rows the query did not return (no row, or a row that never reached
    ``stored``) take that read-then-write path directly. Writes run 16 at a time.
    """
    if not targets:
        return
    try:
        seen = await ledger.stored_past_expiry(now=now, limit=max(limit, len(targets)))
    except Exception as error:
        # Without the ETags every row still gets its guarded read-then-write.
        log.warning("cleanup: ledger query for expired rows failed (%s)", type(error).__name__)
        seen = {}

    async def mark(target: tuple[str, str, str]) -> bool:
        _, call_id, operation_id = target
        row = seen.get((normalize_id(call_id), normalize_id(operation_id)))
        transition = await ledger.mark_expired(call_id, operation_id, seen=row)
        return transition.changed

    marked = await for_each_row(
        targets,
        mark,
        ids=lambda target: (target[1], target[2]),
        summary=summary,
        failure="cleanup: recording deleted but ledger not updated",
    )
    # Who called follows the recordings: a call whose last live recording just expired forgets
    # its caller. Only calls whose row named one (or was not in the query) cost a request.
    named = {
        normalize_id(call_id)
        for (_, call_id, operation_id), changed in marked
        if changed
        and _may_name_caller(seen.get((normalize_id(call_id), normalize_id(operation_id))))
    }
    forgotten = await for_each_row(
        sorted(named),
        ledger.forget_call_identity,
        ids=lambda call_id: (call_id, ""),
        summary=summary,
        failure="cleanup: call did not forget its caller",
    )
    summary.caller_identities_forgotten += sum(1 for _, done in forgotten if done)
    for (name, call_id, operation_id), changed in marked:
        if changed:
            summary.rows_marked_expired += 1
        log_event(
            log, "cleanup: recording expired", call_id=call_id, operation_id=operation_id, blob=name
        )


def _may_name_caller(row: Transition | None) -> bool:
    """The row as the expiry query read it holds some of the caller's identity (unknown: None)."""
    return row is None or any(
        row.record.fields.get(name) not in (None, "") for name in IDENTITY_COLUMNS
    )
