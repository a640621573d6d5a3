"""The cleanup moves on calls the bot left open (shared/bot/open_calls.py), against Azurite."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

import pytest

from shared.bot.open_calls import settle_open_calls
from shared.ledger import Column, OperationLedger, OperationStatus
from tests.support.clock import Clock

S = OperationStatus
WAIT = timedelta(seconds=60)


class Told:
    """Stands in for the bot flow: what it was told (the flow's own tests cover the hang-up)."""

    def __init__(self) -> None:
        self.settled: list[tuple[str, str, bool]] = []

    async def on_recording_settled(
        self, call_id: str, operation_id: str, *, overdue: bool = False
    ) -> None:
        self.settled.append((call_id, operation_id, overdue))


async def row(
    ledger: OperationLedger, status: OperationStatus, *, by: str = "bot", attempt: int = 1
) -> tuple[str, str]:
    call_id, operation_id = str(uuid.uuid4()), str(uuid.uuid4())
    await ledger.advance(
        call_id, operation_id, status, **{Column.STARTED_BY: by, Column.ATTEMPT: attempt}
    )
    return call_id, operation_id


async def test_only_calls_whose_latest_bot_recording_ended_long_enough_ago_are_moved_on(
    storage: Any,
) -> None:
    clock = Clock()
    ledger = OperationLedger(storage.table, clock=clock)
    start = clock.now

    clock.now = start - timedelta(hours=2)
    too_old = await row(ledger, S.STORED)
    clock.now = start - timedelta(minutes=5)
    open_call = await row(ledger, S.STORED)
    downloading = await row(ledger, S.DOWNLOADING)
    by_api = await row(ledger, S.STORED, by="api")
    still_recording = await row(ledger, S.RUNNING)
    # Attempt 1 ended in silence long ago; attempt 2 has just started recording.
    reprompted = await row(ledger, S.FAILED)
    clock.now = start - timedelta(seconds=10)
    await ledger.advance(
        reprompted[0], str(uuid.uuid4()), S.RUNNING, **{Column.STARTED_BY: "bot", Column.ATTEMPT: 2}
    )
    recent = await row(ledger, S.STORED)

    told = Told()
    count = await settle_open_calls(ledger, told, now=start, wait=WAIT)  # type: ignore[arg-type]

    assert sorted(told.settled) == sorted([(*open_call, True), (*downloading, True)]), (
        "only calls whose latest bot attempt finished recording more than the wait ago"
    )
    assert count == 2
    for untouched in (too_old, by_api, still_recording, reprompted, recent):
        assert untouched[0] not in {call for call, _, _ in told.settled}


async def test_a_sweep_that_reaches_its_bound_says_so(
    storage: Any, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    ledger = OperationLedger(storage.table, clock=clock)
    start = clock.now
    clock.now = start - timedelta(minutes=5)
    for _ in range(3):
        await row(ledger, S.STORED)

    told = Told()
    with caplog.at_level(logging.WARNING, logger="shared.bot.open_calls"):
        await settle_open_calls(ledger, told, now=start, wait=WAIT, limit=2)  # type: ignore[arg-type]

    assert len(told.settled) == 2
    assert "more bot recordings than one open-call sweep reads" in caplog.text
