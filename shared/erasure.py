"""Erasure: an operator deletes a recording before its retention ends, and it stays deleted.

The ledger is written first (``erased``, the highest status: nothing moves the row again), the
blob second. A download in flight for the same operation reads the row after its commit
(:func:`erase_if_erased`, called by the worker with the transition its ``stored`` write
returned) and deletes what it just wrote. Whatever the interleaving, one side deletes the blob
last:

- the worker committed before the erasure deleted: the erasure's delete removes it;
- the worker committed after: its ``stored`` write reads the row after the erasure wrote it,
  sees ``erased`` and deletes its own blob.

A call's erasure also covers completions accepted but not yet downloaded, which may have no row
to mark: it writes the call's guard row (``ErasedAt``) before it lists the call's rows. A
download's first write goes in one transaction with that guard row (``DownloadLease.take``), so
it either committed before the guard was written (the listing finds its row) or fails and reads
the guard (the row is written ``erased``, nothing is downloaded).

The transcription reads the row before it writes a transcript and merges its outcome on that
ETag: if the row was erased meanwhile it deletes what it wrote; if not, the erasure's deletes
come after the transcript existed.

The erased row is kept until the ledger horizon (``LEDGER_RETENTION_DAYS``), so an erasure is
auditable; it keeps the ids and the time of the erasure and carries no recording URL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.blob_layout import blob_name_for, transcript_blob_name
from shared.ledger import OperationLedger, OperationRecord, OperationStatus, Transition
from shared.ledger.identity import IdentityColumn, caller_key, canonical_caller, cleared_identity
from shared.logevents import log_event

if TYPE_CHECKING:
    from azure.storage.blob.aio import ContainerClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Erased:
    """One erased operation: its ids, the status it had, and whether a blob was deleted."""

    call_id: str
    operation_id: str
    previous_status: OperationStatus
    blob_deleted: bool


async def delete_recording_blob(container: ContainerClient, blob_name: str) -> bool:
    """Delete a recording blob and its snapshots; False when there was none (not an error)."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        await container.delete_blob(blob_name, delete_snapshots="include")
    except ResourceNotFoundError:
        return False
    return True


def _blob_names(record: OperationRecord) -> list[str]:
    # The canonical name, and the row's own when it differs (a row written by an older version);
    # each with its transcript, which lives and dies with the audio.
    recordings = [blob_name_for(record.call_id, record.operation_id)]
    if record.blob_name and record.blob_name not in recordings:
        recordings.append(record.blob_name)
    return [*recordings, *(transcript_blob_name(name) for name in recordings)]


async def _erase(
    record: OperationRecord, *, ledger: OperationLedger, container: ContainerClient
) -> Erased:
    # The ledger first: from now on a download that commits deletes its own blob.
    await ledger.mark_erased(record.call_id, record.operation_id)
    deleted = False
    for name in _blob_names(record):
        deleted = await delete_recording_blob(container, name) or deleted
    log_event(
        log, "erasure", **record.ids(), previous_status=record.status.value, blob_deleted=deleted
    )
    return Erased(record.call_id, record.operation_id, record.status, deleted)


async def erase_operation(
    call_id: str, operation_id: str, *, ledger: OperationLedger, container: ContainerClient
) -> Erased | None:
    """Erase one operation's recording; None when the ledger knows no such operation.

    Erasing twice is harmless: the second finds the row ``erased`` and no blob.
    """
    record = await ledger.get(call_id, operation_id)
    if record is None:
        return None
    return await _erase(record, ledger=ledger, container=container)


async def erase_call(
    call_id: str,
    *,
    ledger: OperationLedger,
    container: ContainerClient,
    caller_index: str | None = None,
) -> list[Erased] | None:
    """Erase every recording of a call; None when the ledger knows no operation of it.

    The call's guard comes first, even then: a completion still waiting on the queue finds it.
    ``caller_index``: the caller key whose index named this call (an erasure by caller), which
    forgets it too, even if the call's row never came to name its caller.
    """
    # Who the call names, read before the guard clears it (an anonymous caller has no key, yet
    # its call may name whom it was for or who transferred it); the caller's index forgets this
    # call after.
    fields = await ledger.call_fields(call_id)
    keys = {str(key) for key in (fields.get(IdentityColumn.CALLER_KEY), caller_index) if key}
    await ledger.mark_call_erased(call_id, identity=bool(cleared_identity(fields)))
    records = await ledger.list_call(call_id)
    erased = [await _erase(record, ledger=ledger, container=container) for record in records]
    for key in keys:
        await ledger.forget_caller_call(key, call_id)
    return erased or None


# Calls one request erases at most: a caller with more (an automated line, a test number) is
# erased over several requests, each saying whether any is left, so none outlives the HTTP
# front end's timeout. A call takes a handful of storage requests.
ERASE_CALLER_MAX_CALLS = 500


@dataclass(frozen=True)
class CallerErasure:
    """What one erasure-by-caller request did: the operations erased, and whether the caller
    index is empty now (False: calls are left for the next request)."""

    erased: list[Erased]
    complete: bool


async def erase_caller(
    caller: str,
    *,
    ledger: OperationLedger,
    container: ContainerClient,
    max_calls: int = ERASE_CALLER_MAX_CALLS,
) -> CallerErasure | None:
    """Erase every recording, transcript and identity of one caller (a data subject's request).

    ``caller``: a Teams/guest/ACS user id or an E.164 number; None when it is neither. Every call
    the caller index lists is erased as :func:`erase_call` does (its guard row first), so a
    download in flight or a redelivered job of any of them stores nothing. The index lists a
    call from the moment its metadata was captured, before any recording of it exists. At most
    ``max_calls`` calls per request: :attr:`CallerErasure.complete` says whether any is left.
    """
    canonical = canonical_caller(caller)
    if canonical is None:
        return None
    key = caller_key(canonical)
    erased: list[Erased] = []
    done: set[str] = set()
    while True:
        # Each call leaves the index once erased; reading past the ones done means a call the
        # index still names (a failed delete) is skipped, not erased again and again.
        left = [c for c in await ledger.caller_calls(key, limit=len(done) + 100) if c not in done]
        if not left or len(done) >= max_calls:
            break
        for call_id in left[: max_calls - len(done)]:
            erased += (
                await erase_call(call_id, ledger=ledger, container=container, caller_index=key)
                or []
            )
            done.add(call_id)
    complete = not left
    log_event(log, "erasure: caller", calls_erased=len(done), complete=complete)
    return CallerErasure(erased, complete)


async def erase_if_erased(
    transition: Transition, *, container: ContainerClient, blob_name: str
) -> bool:
    """After a download committed: if the row says ``erased``, delete the blob just written.

    ``transition`` is what the worker's ``stored`` write returned, i.e. the row as read after the
    commit. True when the erasure won and the blob is gone.
    """
    if transition.record.status is not OperationStatus.ERASED:
        return False

    await delete_recording_blob(container, blob_name)
    await delete_recording_blob(container, transcript_blob_name(blob_name))
    log_event(
        log,
        "erasure: a download committed after its operation was erased; its blob is deleted",
        level=logging.WARNING,
        call_id=transition.record.call_id,
        operation_id=transition.record.operation_id,
    )
    return True
