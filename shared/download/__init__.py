"""The download worker: stream a recording from its location into Blob Storage, exactly once."""

from shared.download.claim import DownloadClaims
from shared.download.fetch import (
    RetryPolicy,
    TerminalDownloadError,
    TransientDownloadError,
    close_recording_http_client,
    new_http_client,
    recording_http_client,
)
from shared.download.store import blob_name_for
from shared.download.url_guard import RecordingUrlRefused, UrlPolicy, check_recording_url
from shared.download.worker import DownloadOutcome, process_job

__all__ = [
    "DownloadClaims",
    "DownloadOutcome",
    "RecordingUrlRefused",
    "RetryPolicy",
    "TerminalDownloadError",
    "TransientDownloadError",
    "UrlPolicy",
    "blob_name_for",
    "check_recording_url",
    "close_recording_http_client",
    "new_http_client",
    "process_job",
    "recording_http_client",
]
