"""The download job message: built from a notification, token kept out of repr and logs."""

from __future__ import annotations

import pytest

from shared.graph.models import CommsNotifications
from shared.jobs import DownloadJob, InvalidJobError
from tests.data import source_document as doc


def test_job_from_the_source_documents_completion_notification() -> None:
    notification = CommsNotifications.model_validate(doc.COMPLETION_NOTIFICATION).value[0]
    job = DownloadJob.from_notification(notification, tenant_id="t1")
    assert job.call_id == doc.CALL_ID
    assert job.operation_id == doc.OPERATION_ID
    assert job.result_subcode == 8515
    assert job.recording_access_token.get_secret_value() == "<access-token>"
    assert "<access-token>" not in repr(job)
    assert "<access-token>" not in str(job.log_fields())

    again = DownloadJob.from_message(job.to_message())
    assert again == job
    assert again.recording_access_token.get_secret_value() == "<access-token>"


@pytest.mark.parametrize(
    "message",
    ["not json", "{}", '{"version": 2}', '{"version": 1, "call_id": "c"}'],
)
def test_invalid_messages_raise_without_echoing_input(message: str) -> None:
    with pytest.raises(InvalidJobError) as caught:
        DownloadJob.from_message(message)
    assert "not a download job" in str(caught.value)


def test_secret_in_a_bad_message_is_not_echoed() -> None:
    with pytest.raises(InvalidJobError) as caught:
        DownloadJob.from_message('{"version": 1, "recording_access_token": "s3cr3t", "call_id": 5}')
    assert "s3cr3t" not in str(caught.value)
