"""The download worker: stream a recording from its location into Blob Storage, exactly once."""

from shared.download.fetch import (
    DownloadRetry,
    TerminalDownloadError,
    TransientDownloadError,
    new_http_client,
)
from shared.download.outcome import DownloadOutcome
from shared.download.url_guard import RecordingUrlRefused, UrlPolicy, check_recording_url
from shared.download.worker import process_job

__all__ = [
    "DownloadOutcome",
    "DownloadRetry",
    "RecordingUrlRefused",
    "TerminalDownloadError",
    "TransientDownloadError",
    "UrlPolicy",
    "check_recording_url",
    "new_http_client",
    "process_job",
]
