"""The operations ledger on a real Azurite table: forward-only, idempotent, concurrent-safe."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from shared.ledger import OperationLedger, OperationStatus, result_fields, table_key
from tests.support.clock import Clock

S = OperationStatus


@pytest.fixture
def ledger(storage: Any) -> OperationLedger:
    return OperationLedger(storage.table, clock=Clock(tick=timedelta(seconds=1)))


async def test_first_write_creates_the_row_with_its_timestamp(ledger: OperationLedger) -> None:
    transition = await ledger.advance("c1", "o1", S.REQUESTED, ClientContext="ctx")
    assert transition.changed
    record = await ledger.get("c1", "o1")
    assert record is not None
    assert record.status is S.REQUESTED
    assert record.get("ClientContext") == "ctx"
    assert record.get("RequestedAt") is not None


@pytest.mark.parametrize(
    ("events", "final"),
    [
        ([S.REQUESTED, S.RUNNING, S.COMPLETED, S.DOWNLOADING, S.STORED], S.STORED),
        ([S.STORED, S.RUNNING, S.COMPLETED, S.REQUESTED], S.STORED),  # late events ignored
        ([S.RUNNING, S.RUNNING, S.COMPLETED, S.COMPLETED], S.COMPLETED),  # duplicates
        ([S.RUNNING, S.ABANDONED, S.COMPLETED, S.STORED], S.STORED),  # late completion wins
        ([S.RUNNING, S.COMPLETED, S.ABANDONED], S.COMPLETED),  # hang-up after completion
        ([S.DOWNLOADING, S.STORED, S.FAILED], S.STORED),  # a failed duplicate job
        ([S.STORED, S.EXPIRED, S.STORED], S.EXPIRED),  # expiry is final
        ([S.RUNNING, S.FAILED, S.RUNNING], S.FAILED),
    ],
)
async def test_out_of_order_and_duplicate_events_end_in_the_right_state(
    ledger: OperationLedger, events: list[OperationStatus], final: OperationStatus
) -> None:
    for status in events:
        await ledger.advance("call-a", "op-a", status)
    record = await ledger.get("call-a", "op-a")
    assert record is not None
    assert record.status is final


async def test_a_backward_write_changes_nothing(ledger: OperationLedger) -> None:
    await ledger.advance("c", "o", S.STORED, BlobName="c/o.wav")
    transition = await ledger.advance("c", "o", S.RUNNING, BlobName="other")
    assert not transition.changed
    record = await ledger.get("c", "o")
    assert record is not None
    assert record.blob_name == "c/o.wav"
    assert record.get("RunningAt") is None


async def test_concurrent_writers_all_land_and_the_highest_status_wins(
    ledger: OperationLedger,
) -> None:
    statuses = [S.RUNNING, S.COMPLETED, S.DOWNLOADING, S.STORED] * 4
    results = await asyncio.gather(*(ledger.advance("race", "op", s) for s in statuses))
    record = await ledger.get("race", "op")
    assert record is not None
    assert record.status is S.STORED
    assert any(r.changed and r.record.status is S.STORED for r in results)


async def test_ids_in_either_graph_spelling_reach_the_same_row(ledger: OperationLedger) -> None:
    await ledger.advance(
        "57DAB8B1894C409AB240BD8BEAE78896", "0FE0623FD62842EDB4BD8AC290072CC5", S.COMPLETED
    )
    await ledger.advance(
        "57dab8b1-894c-409a-b240-bd8beae78896", "0fe0623f-d628-42ed-b4bd-8ac290072cc5", S.STORED
    )
    records = await ledger.list_call("57dab8b1-894c-409a-b240-bd8beae78896")
    assert [r.status for r in records] == [S.STORED]
    assert records[0].call_id == "57dab8b1-894c-409a-b240-bd8beae78896"


async def test_claim_is_granted_once(ledger: OperationLedger) -> None:
    outcomes = await asyncio.gather(*(ledger.claim("call-x", "record") for _ in range(5)))
    assert outcomes.count(True) == 1
    await ledger.release("call-x", "record")
    assert await ledger.claim("call-x", "record")
    assert await ledger.list_call("call-x") == []  # claims are not operations


async def test_result_fields_carry_the_meaning(ledger: OperationLedger) -> None:
    await ledger.advance("c", "o", S.FAILED, **result_fields(400, 8510, "initial silence"))
    record = await ledger.get("c", "o")
    assert record is not None
    assert record.get("ResultMeaning") == "8510: initial silence timeout"
    body = record.to_json()
    assert body["status"] == "failed"
    assert body["resultSubcode"] == 8510
    assert "partitionKey" not in body


async def test_query_is_bounded(ledger: OperationLedger) -> None:
    for index in range(5):
        await ledger.advance("many", f"op{index}", S.RUNNING)
    found = await ledger.query("Status eq @s", {"s": "running"}, limit=3)
    assert len(found) == 3


def test_table_keys_escape_forbidden_characters() -> None:
    assert "/" not in table_key("a/b#c?d\\e")
