"""Public list prices (USD) that figure 9 turns the measured quantities into, each with its source.

Prices vary by region and currency and change; each constant names where it was read and when.
Where the stored copy of a page gave Microsoft's own *sample* figure rather than the live price
list, the source says so: replace it with your region's price (Azure Retail Prices API) before
quoting a budget. The figures that dominate (Flex execution, stored GB) are the ones to check.
"""

from __future__ import annotations

from dataclasses import dataclass

# The app's default Flex instance size (infra/main.bicep: instanceMemoryMB).
INSTANCE_MEMORY_MB = 2048
# RECORDING_RETENTION_MINUTES defaults to 60: a recording is stored for an hour.
RETENTION_HOURS = 1.0
HOURS_PER_MONTH = 730.0

FLEX_ON_DEMAND_GB_S = 0.000026
FLEX_ON_DEMAND_PER_MILLION_EXECUTIONS = 0.40
FLEX_SOURCE = (
    "Flex Consumption on-demand $0.000026 per GB-s and $0.40 per million executions (East US), "
    "as quoted from the Azure Functions pricing page by modal.com/blog/azure-function-pricing-"
    "guide (2025-05-22); the monthly free grant is left out"
)
ALWAYS_READY_BASELINE_GB_S = 0.000004
ALWAYS_READY_SOURCE = (
    "'Always Ready Baseline' $0.000004 per GB-s, docs/infrastructure.md (checked 2026-01)"
)
BLOB_HOT_GB_MONTH = 0.0208
BLOB_WRITE_PER_10K = 0.055
BLOB_OTHER_PER_10K = 0.0044
BLOB_SOURCE = (
    "Microsoft Learn 'Estimate the cost of using AzCopy / blob storage' sample prices (hot: "
    "writes $0.055 and other operations $0.0044 per 10,000; $104 for 5 000 GB a month); "
    "Microsoft marks them as examples: check azure.microsoft.com/pricing/details/storage/blobs"
)
QUEUE_TABLE_PER_10K = 0.0044
QUEUE_TABLE_SOURCE = (
    "assumed at the blob 'all other operations' sample rate ($0.0044 per 10,000); check "
    "azure.microsoft.com/pricing/details/storage/queues and /tables"
)
EVENT_PER_MILLION = 0.60
EVENT_SOURCE = (
    "Event Grid basic tier $0.60 per million operations (list price as commonly quoted, not "
    "re-read for this run: check azure.microsoft.com/pricing/details/event-grid); one event per "
    "stored recording"
)
SPEECH_PER_AUDIO_HOUR = 0.36
SPEECH_SOURCE = (
    "Azure AI Speech fast transcription, assumed $0.36 per audio hour (not re-read for this "
    "run: check azure.microsoft.com/pricing/details/cognitive-services/speech-services); opt-in"
)


@dataclass(frozen=True)
class Quantities:
    """What one recording uses, as figure 9 measured it."""

    executions: float
    alone_seconds: float
    busy_seconds: float
    blob_writes: float
    blob_other: float
    queue_requests: float
    table_requests: float
    stored_bytes: float
    audio_seconds: float


@dataclass(frozen=True)
class Line:
    item: str
    usd: float
    formula: str
    price_source: str


def per_thousand(q: Quantities) -> list[Line]:
    """The cost of 1 000 recordings, item by item (on-demand; always-ready is fixed, apart)."""
    gb = INSTANCE_MEMORY_MB / 1024
    thousand = 1000
    return [
        Line(
            "Flex execution, one recording at a time",
            thousand * q.alone_seconds * gb * FLEX_ON_DEMAND_GB_S,
            f"1 000 × {q.alone_seconds:.3f} s × {gb:g} GB × $0.000026",
            FLEX_SOURCE,
        ),
        Line(
            "Flex execution, busy instance",
            thousand * q.busy_seconds * gb * FLEX_ON_DEMAND_GB_S,
            f"1 000 × {q.busy_seconds:.3f} s × {gb:g} GB × $0.000026",
            FLEX_SOURCE,
        ),
        Line(
            "Flex executions",
            thousand * q.executions * FLEX_ON_DEMAND_PER_MILLION_EXECUTIONS / 1e6,
            f"1 000 × {q.executions:g} executions × $0.40 per million",
            FLEX_SOURCE,
        ),
        Line(
            "blob requests",
            thousand
            * (q.blob_writes * BLOB_WRITE_PER_10K + q.blob_other * BLOB_OTHER_PER_10K)
            / 1e4,
            f"1 000 × ({q.blob_writes:g} writes × $0.055 + {q.blob_other:g} other × $0.0044) "
            "per 10 000",
            BLOB_SOURCE,
        ),
        Line(
            "queue and table requests",
            thousand * (q.queue_requests + q.table_requests) * QUEUE_TABLE_PER_10K / 1e4,
            f"1 000 × ({q.queue_requests:g} queue + {q.table_requests:g} table) × $0.0044 "
            "per 10 000",
            QUEUE_TABLE_SOURCE,
        ),
        Line(
            "stored bytes for the retention",
            thousand * q.stored_bytes / 1e9 * BLOB_HOT_GB_MONTH * RETENTION_HOURS / HOURS_PER_MONTH,
            f"1 000 × {q.stored_bytes / 1e6:g} MB × {RETENTION_HOURS:g} h ÷ 730 h × $0.0208 "
            "per GB-month",
            BLOB_SOURCE,
        ),
        Line(
            "events (one per recording)",
            thousand * EVENT_PER_MILLION / 1e6,
            "1 000 × $0.60 per million",
            EVENT_SOURCE,
        ),
        Line(
            "Speech, opt-in (whole recording transcribed)",
            thousand * q.audio_seconds / 3600 * SPEECH_PER_AUDIO_HOUR,
            f"1 000 × {q.audio_seconds:g} s ÷ 3 600 × $0.36 per audio hour",
            SPEECH_SOURCE,
        ),
    ]


def always_ready_monthly(instances: int = 2) -> float:
    gb = INSTANCE_MEMORY_MB / 1024
    return instances * gb * HOURS_PER_MONTH * 3600 * ALWAYS_READY_BASELINE_GB_S


def always_ready_note() -> str:
    return (
        "Fixed, apart from the per-recording cost: the default two always-ready instances "
        f"({INSTANCE_MEMORY_MB} MB each) cost about ${always_ready_monthly():.0f} a month in "
        f"baseline before any call ({ALWAYS_READY_SOURCE}); their execution time bills at a "
        "lower rate than on-demand."
    )
