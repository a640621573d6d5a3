"""The recordings list across calls: index rows, so a page costs what the page holds.

Operation rows live in their call's partition; listing them across calls by time would scan the
table. Each recording (each completion a download starts from) gets one index row in a partition
per UTC hour (``~time~YYYYMMDDHH``), keyed newest first (inverted milliseconds), written before the
recording's ``downloading`` write, which records the same key on the operation row
(``IndexKey``). An index row whose operation row does not carry its key (a crash between the two
writes, a duplicate delivery) points to nothing: the list skips it and the cleanup sweeps it.
Index rows carry ids and times only, never identity; the ledger horizon removes them with the
rows they point to.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.graph.ids import normalize_id
from shared.ledger.rows import table_key

TIME_PARTITION_PREFIX = "~time~"
_BUCKET_FORMAT = "%Y%m%d%H"
_MAX_MS = 10**13 - 1
_INDEX_KEY = re.compile(r"([0-9]{10})/([0-9]{13}~[^/]{1,300})")


def bucket_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_BUCKET_FORMAT)


def bucket_start(bucket: str) -> datetime:
    return datetime.strptime(bucket, _BUCKET_FORMAT).replace(tzinfo=UTC)


def time_partition(bucket: str) -> str:
    return TIME_PARTITION_PREFIX + bucket


def time_row_key(moment: datetime, call_id: str, operation_id: str) -> str:
    """Newest first inside a bucket: row keys sort ascending, the inverted time does it."""
    inverted = _MAX_MS - int(moment.timestamp() * 1000)
    return f"{inverted:013d}~{table_key(call_id)}~{table_key(operation_id)}"


def index_key(moment: datetime, call_id: str, operation_id: str) -> str:
    """``<bucket>/<row key>``: where a recording's index row is, recorded on its operation row."""
    return f"{bucket_of(moment)}/{time_row_key(moment, normalize_id(call_id), operation_id)}"


def split_index_key(key: str) -> tuple[str, str] | None:
    match = _INDEX_KEY.fullmatch(key)
    return (match.group(1), match.group(2)) if match else None


def order_key(key: str) -> tuple[int, str]:
    """Newest first across buckets: later bucket first, then row key ascending."""
    bucket, row = key.split("/", 1)
    return (-int(bucket), row)


def row_time(row_key: str) -> datetime:
    return datetime.fromtimestamp((_MAX_MS - int(row_key[:13])) / 1000, tz=UTC)


def buckets_between(start: datetime, end: datetime) -> list[str]:
    """The hour buckets from ``end`` back to ``start``, newest first."""
    buckets, moment = [], end.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while moment >= start.astimezone(UTC).replace(minute=0, second=0, microsecond=0):
        buckets.append(bucket_of(moment))
        moment -= timedelta(hours=1)
    return buckets


@dataclass(frozen=True)
class RecordingQuery:
    """One page of the recordings list: newest first between ``start`` and ``end``, after the
    index key ``after`` (a continuation token's), at most ``top``; ``statuses`` and
    ``caller_key`` (:func:`~shared.ledger.identity.caller_key`) filter, None: all."""

    start: datetime
    end: datetime
    top: int
    statuses: frozenset[str] | None = None
    caller_key: str | None = None
    after: str | None = None

    def wants(self, status: str) -> bool:
        return self.statuses is None or status in self.statuses


class BadToken(ValueError):
    """A continuation token this app did not write."""


def encode_token(last_key: str) -> str:
    body = json.dumps({"v": 1, "k": last_key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(body).decode().rstrip("=")


def decode_token(token: str) -> str:
    """The index key a page ended at; :class:`BadToken` for anything else."""
    try:
        padded = token + "=" * (-len(token) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError) as error:
        raise BadToken("continuationToken is not one this API returned") from error
    key = body.get("k") if isinstance(body, dict) and body.get("v") == 1 else None
    if not isinstance(key, str) or split_index_key(key) is None:
        raise BadToken("continuationToken is not one this API returned")
    return key


__all__ = [
    "BadToken",
    "RecordingQuery",
    "bucket_of",
    "bucket_start",
    "buckets_between",
    "decode_token",
    "encode_token",
    "index_key",
    "order_key",
    "row_time",
    "split_index_key",
    "time_partition",
    "time_row_key",
]
