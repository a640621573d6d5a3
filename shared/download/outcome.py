"""How a download job was settled: what its outcome carries and how its one log line reads.

A transient failure raises instead (the host redelivers the message); everything else ends with
exactly one ``recording download outcome=...`` line carrying the same fields as the result (the
skeleton in :mod:`shared.queue_jobs` writes it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Literal

from shared.queue_jobs import JobKind, JobOutcome

Outcome = Literal["stored", "already_stored", "failed", "invalid", "erased", "expired"]

DOWNLOAD = JobKind(
    event="recording download",
    logger=logging.getLogger("shared.download.worker"),
    stage="download",
)


@dataclass(frozen=True)
class DownloadOutcome(JobOutcome):
    """How one download message was settled (a transient failure raises instead)."""

    kind: ClassVar[JobKind] = DOWNLOAD
    line: ClassVar[tuple[str, ...]] = ("size_bytes", "attempts", "duration_ms", "latency_ms")

    blob_name: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    content_type: str | None = None
    latency_ms: int | None = None
