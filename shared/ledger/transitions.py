"""The ledger in the domain's words: one method per thing that happens to a recording.

Each ``mark_*`` is a forward move (:meth:`~shared.ledger.table.LedgerTable.advance`) with the
columns that event records, or, for the transcription's columns beside the status, a merge through
the same conflict retry; callers never spell column names. The download lease is
:class:`~shared.ledger.lease.DownloadLease`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.graph.ids import normalize_id
from shared.ledger.identity import (
    CALL_COLUMNS,
    IDENTITY_COLUMNS,
    IdentityColumn,
    cleared_identity,
)
from shared.ledger.outbox import TRANSCRIPTION_FAILED_AT, EventMarkers, EventStep
from shared.ledger.rows import (
    CALL_GUARD_ROW,
    ROW_KIND_OPERATION,
    STAMP,
    TRANSCRIBED,
    TRANSCRIPTION_FAILED,
    Column,
    OperationStatus,
    Transition,
    call_guard_row,
    is_operation_row,
    result_columns,
    table_key,
    to_record,
)
from shared.ledger.table import Keep, Seen, Write
from shared.logevents import log_event

if TYPE_CHECKING:
    from shared.blob_layout import WavFacts
    from shared.graph.models import ResultInfo

log = logging.getLogger("shared.ledger")


class OperationLedger(EventMarkers):
    """The operations ledger: :class:`LedgerTable`'s mechanics, spoken in the domain's words.

    Each step downstream systems hear of writes its event marker in the same write and is
    announced after it (:mod:`shared.ledger.outbox`).
    """

    async def mark_started(
        self,
        call_id: str,
        operation_id: str,
        status: OperationStatus,
        *,
        requested_at: datetime,
        client_context: str | None,
        started_by: str,
        max_record_duration_seconds: int,
        result: ResultInfo | None = None,
        failure_reason: str | None = None,
        attempt: int | None = None,
        prompt: str | None = None,
    ) -> Transition:
        """A recordResponse Graph accepted: its first status is whatever Graph's reply said.

        ``attempt`` numbers the bot's recordings of one call (1, then 2 after a re-prompt...).
        """
        failed = status is OperationStatus.FAILED
        transition = await self.advance(
            call_id,
            operation_id,
            status,
            **{
                Column.REQUESTED_AT: requested_at,
                Column.CLIENT_CONTEXT: client_context,
                Column.STARTED_BY: started_by,
                Column.MAX_RECORD_DURATION_SECONDS: max_record_duration_seconds,
                Column.FAILURE_REASON: failure_reason,
                Column.ATTEMPT: attempt,
                Column.PROMPT: prompt[:1024] if prompt else None,
                **result_columns(result),
                **(self.event_marker(EventStep.FAILED) if failed else {}),
            },
        )
        if failed:
            self.announce(transition, EventStep.FAILED)
        return transition

    async def mark_completed(
        self,
        call_id: str,
        operation_id: str,
        *,
        result: ResultInfo | None = None,
        client_context: str | None = None,
    ) -> Transition:
        return await self.advance(
            call_id,
            operation_id,
            OperationStatus.COMPLETED,
            **{Column.CLIENT_CONTEXT: client_context, **result_columns(result)},
        )

    async def mark_failed(
        self,
        call_id: str,
        operation_id: str,
        reason: str,
        *,
        result: ResultInfo | None = None,
        client_context: str | None = None,
        tenant_id: str | None = None,
        after: Transition | None = None,
    ) -> Transition:
        """``after``: the worker's last write (its lease), given back in this same write."""
        columns = {
            Column.FAILURE_REASON: reason,
            Column.CLIENT_CONTEXT: client_context,
            Column.TENANT_ID: tenant_id,
            **result_columns(result),
            **self.event_marker(EventStep.FAILED),
        }
        if after is not None:
            columns[Column.DOWNLOAD_HOLDER] = ""
            transition = await self.advance_from(after, OperationStatus.FAILED, **columns)
        else:
            transition = await self.advance(
                call_id, operation_id, OperationStatus.FAILED, **columns
            )
        self.announce(transition, EventStep.FAILED)
        return transition

    async def mark_abandoned(
        self,
        call_id: str,
        operation_id: str,
        reason: str,
        *,
        call_end_message: str | None = None,
    ) -> Transition:
        transition = await self.advance(
            call_id,
            operation_id,
            OperationStatus.ABANDONED,
            **{
                Column.FAILURE_REASON: reason,
                Column.CALL_END_MESSAGE: call_end_message[:512] if call_end_message else None,
                **self.event_marker(EventStep.ABANDONED),
            },
        )
        self.announce(transition, EventStep.ABANDONED)
        return transition

    async def mark_stored(
        self,
        call_id: str,
        operation_id: str,
        *,
        blob_name: str,
        size_bytes: int,
        sha256: str | None,
        content_type: str | None,
        expires_at: datetime | None,
        stored_at: datetime | None = None,
        after: Transition | None = None,
        audio: WavFacts | None = None,
        audio_read: bool = False,
    ) -> Transition:
        """``after``: this instance's last write (its lease); the row is then not read again.

        ``audio``: what the stored WAV's own header says; ``audio_read``: the header was looked
        at, so no ``audio`` means the body is not a WAV this app can read (``AudioFormat``
        ``unknown``).
        """
        columns = {
            **_audio_columns(audio, read=audio_read),
            Column.BLOB_NAME: blob_name,
            Column.SIZE_BYTES: size_bytes,
            Column.SHA256: sha256,
            Column.CONTENT_TYPE: content_type,
            Column.STORED_AT: stored_at,
            Column.EXPIRES_AT: expires_at,
            # The download is over: its lease goes in the same write.
            Column.DOWNLOAD_HOLDER: "",
            **self.event_marker(EventStep.STORED),
        }
        if after is not None:
            transition = await self.advance_from(after, OperationStatus.STORED, **columns)
        else:
            transition = await self.advance(
                call_id, operation_id, OperationStatus.STORED, **columns
            )
        self.announce(transition, EventStep.STORED)
        return transition

    async def stored_past_expiry(
        self, *, now: datetime, limit: int
    ) -> dict[tuple[str, str], Transition]:
        """``stored`` rows whose ``ExpiresAt`` has passed, each with its ETag, by (call id,
        operation id) in canonical form (``normalize_id``): one query page per 1 000 rows, so
        that :meth:`mark_expired` needs no read."""
        query = "Kind eq @kind and Status eq @stored and ExpiresAt lt @now"
        parameters = {
            "kind": ROW_KIND_OPERATION,
            "stored": OperationStatus.STORED.value,
            "now": now,
        }
        rows: dict[tuple[str, str], Transition] = {}
        async for entity in self._table.query_entities(
            query,
            parameters=parameters,
            results_per_page=min(limit, 1000),
            # What a record needs, no more: a page holds up to 1 000 rows. With events on, the
            # whole row: the expired event is built from the row the merge returns. The caller's
            # identity: the merge clears what the row holds (only what it was read with), and
            # the call has a caller to forget (shared/retention/expiry.py).
            select=None
            if self.events is not None
            else [
                "PartitionKey",
                "RowKey",
                "Kind",
                "CallId",
                "OperationId",
                "Status",
                *IDENTITY_COLUMNS,
            ],
        ):
            etag = entity.metadata.get("etag")
            if etag:
                record = to_record(entity)
                rows[(record.call_id, record.operation_id)] = Transition(
                    record, changed=False, etag=etag
                )
            if len(rows) >= limit:
                break
        return rows

    async def mark_expired(
        self, call_id: str, operation_id: str, *, seen: Transition | None = None
    ) -> Transition:
        """The recording's retention is over and its blob is gone.

        ``seen``: the row as :meth:`stored_past_expiry` found it; the write is then one merge on
        its ETag, and only a row written since (another run, an erasure) is read again.
        """
        # The caller's identity follows the recording's retention: gone in the same write.
        marker = self.event_marker(EventStep.EXPIRED)
        if seen is not None:
            transition = await self.advance_from(seen, OperationStatus.EXPIRED, **marker)
        else:
            transition = await self.advance(
                call_id, operation_id, OperationStatus.EXPIRED, **marker
            )
        self.announce(transition, EventStep.EXPIRED)
        return transition

    async def mark_erased(self, call_id: str, operation_id: str) -> Transition:
        """An operator erased the recording; the row stays (auditable) until the ledger horizon."""
        transition = await self.advance(
            call_id,
            operation_id,
            OperationStatus.ERASED,
            **self.event_marker(EventStep.ERASED),
        )
        self.announce(transition, EventStep.ERASED)
        return transition

    async def mark_call_erased(self, call_id: str, *, identity: bool = True) -> None:
        """An operator erased the whole call: its guard row says so, before any row is listed.

        One unconditional merge: whatever it finds, the guard's ETag changes, so a download whose
        first write was decided on the guard as it was fails and reads it again (``erased``).
        """
        from azure.data.tables import UpdateMode

        now = self._clock()
        # ``identity``: the call's row names someone (shared/ledger/identity.py), who goes in
        # this same write.
        cleared = cleared_identity() if identity else {}
        row = call_guard_row(call_id, now, **{STAMP[OperationStatus.ERASED]: now}, **cleared)
        await self._table.upsert_entity(row, mode=UpdateMode.MERGE)
        log_event(log, "ledger", call_id=normalize_id(call_id), guard="erased")

    async def call_fields(self, call_id: str) -> dict[str, Any]:
        """The call's metadata as its row holds it (empty: never captured)."""
        seen = await self._read(table_key(call_id), CALL_GUARD_ROW)
        if seen is None:
            return {}
        return {name: seen.fields[name] for name in CALL_COLUMNS if name in seen.fields}

    async def mark_call_metadata(self, call_id: str, columns: Mapping[str, Any]) -> bool:
        """Who called and what was called, captured once per call (shared/ledger/identity.py).

        The caller index row comes first, so an erasure by caller finds the call as soon as the
        call's row names its caller; the call's row is the erasure guard, so metadata never goes
        onto an erased call, and a capture already made is kept (``AnsweredAt`` may be added
        later). True when this write captured it.
        """
        key = columns.get(IdentityColumn.CALLER_KEY)
        if key:
            await self._index_caller_call(str(key), call_id)
        partition = table_key(call_id)
        erased = False

        def decide(current: Seen | None) -> Keep[bool] | Write[bool]:
            nonlocal erased
            now = self._clock()
            if current is None:
                row = call_guard_row(call_id, now, CreatedAt=now, **columns)
                return Write(row, lambda _after: True)
            if current.fields.get(STAMP[OperationStatus.ERASED]):
                erased = True
                return Keep(False)
            known = current.fields.get(IdentityColumn.SOURCE)
            if known and known != "unknown":
                # Captured before: only an answer time may be added.
                answered = columns.get(IdentityColumn.ANSWERED_AT)
                if answered is None or current.fields.get(IdentityColumn.ANSWERED_AT):
                    return Keep(False)
                return Write(
                    {IdentityColumn.ANSWERED_AT: answered, "UpdatedAt": now}, lambda _a: False
                )
            return Write({**columns, "UpdatedAt": now}, lambda _after: True)

        # Blind create first: a call's metadata is captured as it arrives, before anything else
        # writes its row (a wrong guess costs one request: the create's 409, then a read).
        captured = await self._rewrite_at(
            partition, CALL_GUARD_ROW, decide, call_id=call_id, absent=True
        )
        if erased and key:
            # The call was erased first: its caller's index must not name it (nor keep the
            # caller's digest beside an erased call until the horizon).
            await self.forget_caller_call(str(key), call_id)
        log_event(
            log,
            "ledger",
            call_id=normalize_id(call_id),
            call_metadata="captured" if captured else "kept",
        )
        return captured

    async def transcription_target(self, call_id: str, operation_id: str) -> Transition | None:
        """The row a transcription is for, with its ETag (None: no row); read before the work, so
        an erased recording is not sent to Speech, and the outcome merges on this ETag."""
        seen = await self._read(table_key(call_id), table_key(operation_id))
        if seen is None or not is_operation_row(seen.fields):
            return None
        return seen.transition(changed=False)

    async def mark_transcribed(
        self,
        call_id: str,
        operation_id: str,
        *,
        transcribed_at: datetime,
        audio_deleted_at: datetime | None = None,
        seen: Transition | None = None,
    ) -> Transition | None:
        """The transcript is stored (the Status column is not the transcription's to move).

        ``seen``: the row as :meth:`transcription_target` read it before the transcript was
        written; the merge goes on its ETag, so an erasure since then is read, not overwritten.
        Returns the row (None when there is none): ``erased`` means the transcript must go.
        """
        fields = {
            Column.TRANSCRIPTION_STATUS: TRANSCRIBED,
            Column.TRANSCRIBED_AT: transcribed_at,
            Column.AUDIO_DELETED_AT: audio_deleted_at,
            # A failure recorded by an earlier delivery no longer applies.
            Column.TRANSCRIPTION_FAILURE_REASON: "",
            **self.event_marker(EventStep.TRANSCRIBED),
        }
        transition = await self._merge_transcription(call_id, operation_id, fields, seen=seen)
        self.announce(transition, EventStep.TRANSCRIBED)
        return transition

    async def mark_transcription_failed(
        self, call_id: str, operation_id: str, reason: str, *, unless_recorded: bool = False
    ) -> Transition | None:
        """The recording could not be transcribed; a transcript already stored wins.

        ``unless_recorded``: a failure already recorded is kept (the cleanup's poison purge: the
        worker's own reason says more than "poisoned").
        """
        marker = self.event_marker(EventStep.TRANSCRIPTION_FAILED)
        transition = await self._merge_transcription(
            call_id,
            operation_id,
            {
                Column.TRANSCRIPTION_STATUS: TRANSCRIPTION_FAILED,
                Column.TRANSCRIPTION_FAILURE_REASON: reason[:1024],
                **({TRANSCRIPTION_FAILED_AT: self._clock(), **marker} if marker else {}),
            },
            keep_failure=unless_recorded,
        )
        self.announce(transition, EventStep.TRANSCRIPTION_FAILED)
        return transition

    async def _merge_transcription(
        self,
        call_id: str,
        operation_id: str,
        fields: Mapping[str, Any],
        *,
        seen: Transition | None = None,
        keep_failure: bool = False,
    ) -> Transition | None:
        """Merge transcription columns into an existing row (None when there is no row).

        Forward-only like :meth:`advance`: ``transcribed`` is final, only a failure may be
        overwritten (by a later delivery that succeeded), and an ``erased`` row takes nothing.
        """
        extra = {name: value for name, value in fields.items() if value is not None}
        keep = {TRANSCRIBED, TRANSCRIPTION_FAILED} if keep_failure else {TRANSCRIBED}

        def then(after: Seen) -> Transition:
            record = after.record
            _log_transcription(record.call_id, record.operation_id, extra)
            return after.transition(changed=True)

        def decide(current: Seen | None) -> Keep[Transition | None] | Write[Transition | None]:
            if current is None or not is_operation_row(current.fields):
                return Keep(None)
            if current.record.status is OperationStatus.ERASED:
                return Keep(current.transition(changed=False))
            if current.fields.get(Column.TRANSCRIPTION_STATUS) in keep:
                return Keep(current.transition(changed=False))
            return Write({"UpdatedAt": self._clock(), **extra}, then)

        known = None
        if seen is not None and seen.etag is not None:
            known = Seen(seen.record.fields, seen.etag)
        return await self._rewrite(call_id, operation_id, decide, known=known)


def _audio_columns(audio: WavFacts | None, *, read: bool) -> dict[str, Any]:
    if audio is None:
        return {Column.AUDIO_FORMAT: "unknown"} if read else {}
    return {
        Column.AUDIO_FORMAT: "pcm" if audio.format_tag == 1 else "extensible",
        Column.DURATION_SECONDS: audio.duration_seconds,
        Column.SAMPLE_RATE: audio.sample_rate,
        Column.CHANNELS: audio.channels,
        Column.BITS_PER_SAMPLE: audio.bits_per_sample,
    }


def _log_transcription(call_id: str, operation_id: str, fields: Mapping[str, Any]) -> None:
    log_event(
        log,
        "ledger",
        call_id=call_id,
        operation_id=operation_id,
        transcription_status=fields.get(Column.TRANSCRIPTION_STATUS),
    )
