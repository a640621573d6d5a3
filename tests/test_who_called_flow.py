"""Who called, end to end: the simulator's caller shapes through the bot flow (as the webhook
hands it notifications), the registered download worker and the status route."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.graphsim import GraphSimulator
from devtools.graphsim.models import RESOURCE_ACCOUNT_NUMBER, SIMULATED_CALLER_NUMBER
from shared.blob_layout import wav_facts
from shared.ledger import OperationLedger, OperationStatus
from tests.support.inbox import Inbox
from tests.test_bot_flow import WebhookStandIn, bot_env, inbox, new_flow, sim  # noqa: F401
from tests.test_who_called import status_of


@pytest.mark.parametrize("caller", ["teams-user", "pstn"])
async def test_the_status_shows_who_called_and_the_stored_wav(
    bot_env: GraphSimulator,  # noqa: F811
    inbox: Inbox,  # noqa: F811
    storage: Any,
    caller: str,
) -> None:
    sim = bot_env  # noqa: F811
    webhook = WebhookStandIn(inbox, [new_flow()], storage)
    call_id = sim.place_call(caller=caller)
    await webhook.run_until(lambda: sim.call(call_id).state == "terminated")

    (operation,) = [op for op in sim.operations if op.kind == "record"]
    record = await OperationLedger(storage.table).get(call_id, operation.id)
    assert record is not None
    assert record.status is OperationStatus.STORED
    body = await status_of(call_id, operation.id)

    if caller == "pstn":
        assert body["caller"] == {
            "kind": "phone",
            "id": SIMULATED_CALLER_NUMBER,
            "phone": SIMULATED_CALLER_NUMBER,
        }
        assert body["called"]["phone"] == RESOURCE_ACCOUNT_NUMBER
    else:
        assert body["caller"]["kind"] == "user"
        assert body["caller"]["displayName"] == "Simulated Caller"
        assert body["caller"]["id"] == sim.call(call_id).caller_id
        assert body["called"]["kind"] == "application"
    assert body["call"]["direction"] == "incoming"
    assert body["call"]["metadataSource"] == "notification"

    # The WAV facts are the stored bytes' own.
    stored = await (await storage.container.download_blob(body["blobName"])).readall()
    facts = wav_facts(stored[:4096], len(stored))
    assert facts is not None
    assert body["durationSeconds"] == facts.duration_seconds
    assert body["sampleRate"] == facts.sample_rate
    assert body["channels"] == facts.channels
    assert body["bitsPerSample"] == facts.bits_per_sample
