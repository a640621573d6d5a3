"""What the local host reads before it starts: ``host.json`` and ``local.settings.json``.

Only the parts of ``host.json`` the local host honours are parsed (HTTP route prefix, function
timeout, ``extensions.queues``); the defaults are the Functions host's own, so an app without a
``host.json`` section behaves as it would under ``func start``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# hh:mm:ss, optionally with a day prefix (d.hh:mm:ss) and fractional seconds, as .NET TimeSpan.
_TIMESPAN = re.compile(
    r"^(?:(?P<days>\d+)\.)?(?P<hours>\d{1,2}):(?P<minutes>\d{1,2}):(?P<seconds>\d{1,2}(?:\.\d+)?)$"
)
_SETTING_EXPRESSION = re.compile(r"%([^%]+)%")


class HostConfigurationError(ValueError):
    """host.json, local.settings.json or a function's metadata cannot be honoured as written."""


def parse_timespan(value: str, *, name: str) -> timedelta:
    """A .NET TimeSpan string (``00:00:02``, ``1.00:00:00``) as a ``timedelta``."""
    match = _TIMESPAN.match(value.strip())
    if match is None:
        raise HostConfigurationError(
            f"{name}: expected a TimeSpan such as 00:00:30 (hh:mm:ss), got {value!r}"
        )
    return timedelta(
        days=int(match["days"] or 0),
        hours=int(match["hours"]),
        minutes=int(match["minutes"]),
        seconds=float(match["seconds"]),
    )


def resolve_setting_expressions(value: str, environ: Mapping[str, str], *, name: str) -> str:
    """Replace each ``%SETTING%`` with that app setting, as the Functions host does for bindings."""

    def lookup(match: re.Match[str]) -> str:
        setting = match.group(1)
        if setting not in environ:
            raise HostConfigurationError(
                f"{name}: app setting {setting!r} (referenced as %{setting}%) is not set"
            )
        return environ[setting]

    return _SETTING_EXPRESSION.sub(lookup, value)


@dataclass(frozen=True)
class QueueOptions:
    """``extensions.queues`` of host.json, with the Functions host's defaults."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    visibility_timeout: timedelta = timedelta(0)
    max_dequeue_count: int = 5
    max_polling_interval: timedelta = timedelta(minutes=1)
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, section: Mapping[str, Any]) -> QueueOptions:
        prefix = "host.json extensions.queues"
        batch_size = int(section.get("batchSize", cls.batch_size))
        if not 1 <= batch_size <= 32:
            raise HostConfigurationError(f"{prefix}.batchSize: must be 1..32, got {batch_size}")
        threshold = int(section.get("newBatchThreshold", batch_size // 2))
        if threshold < 0:
            raise HostConfigurationError(f"{prefix}.newBatchThreshold: must be >= 0")
        max_dequeue = int(section.get("maxDequeueCount", cls.max_dequeue_count))
        if max_dequeue < 1:
            raise HostConfigurationError(f"{prefix}.maxDequeueCount: must be >= 1")
        encoding = str(section.get("messageEncoding", cls.message_encoding)).lower()
        if encoding not in {"base64", "none"}:
            raise HostConfigurationError(
                f"{prefix}.messageEncoding: must be base64 or none, got {encoding!r}"
            )
        visibility = (
            parse_timespan(section["visibilityTimeout"], name=f"{prefix}.visibilityTimeout")
            if "visibilityTimeout" in section
            else cls.visibility_timeout
        )
        polling = (
            parse_timespan(section["maxPollingInterval"], name=f"{prefix}.maxPollingInterval")
            if "maxPollingInterval" in section
            else cls.max_polling_interval
        )
        if polling < timedelta(milliseconds=100):
            raise HostConfigurationError(f"{prefix}.maxPollingInterval: must be >= 00:00:00.1")
        return cls(
            batch_size=batch_size,
            new_batch_threshold=threshold,
            visibility_timeout=visibility,
            max_dequeue_count=max_dequeue,
            max_polling_interval=polling,
            message_encoding=encoding,
        )


@dataclass(frozen=True)
class HostOptions:
    """The parts of host.json the local host honours."""

    route_prefix: str = "api"
    function_timeout: timedelta = timedelta(minutes=5)
    queues: QueueOptions = field(default_factory=QueueOptions)

    @classmethod
    def load(cls, path: Path | None) -> HostOptions:
        """Read ``path``; a missing file means the Functions host's defaults."""
        if path is None or not path.exists():
            return cls()
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise HostConfigurationError(f"{path}: not valid JSON ({error})") from error
        extensions = document.get("extensions") or {}
        prefix = str((extensions.get("http") or {}).get("routePrefix", cls.route_prefix))
        timeout = (
            parse_timespan(str(document["functionTimeout"]), name="host.json functionTimeout")
            if document.get("functionTimeout")
            else cls.function_timeout
        )
        return cls(
            route_prefix=prefix.strip("/"),
            function_timeout=timeout,
            queues=QueueOptions.from_host_json(extensions.get("queues") or {}),
        )


@dataclass(frozen=True)
class LocalSettings:
    """``local.settings.json``: the app settings (``Values``) and the host's HTTP port."""

    values: dict[str, str]
    http_port: int | None = None

    @classmethod
    def load(cls, path: Path) -> LocalSettings:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise HostConfigurationError(f"{path}: not valid JSON ({error})") from error
        if document.get("IsEncrypted"):
            raise HostConfigurationError(
                f"{path}: IsEncrypted is true; the local host reads plain-text settings only"
            )
        raw_values = document.get("Values") or {}
        if not isinstance(raw_values, dict):
            raise HostConfigurationError(f"{path}: Values must be an object")
        values = {}
        for name, value in raw_values.items():
            if isinstance(value, dict | list):
                raise HostConfigurationError(f"{path}: Values.{name} must be a string")
            # Core Tools hands every value to the worker as a string.
            values[str(name)] = "" if value is None else str(value)
        port = (document.get("Host") or {}).get("LocalHttpPort")
        return cls(values=values, http_port=int(port) if port else None)

    def apply(self, environ: MutableMapping[str, str] | None = None) -> list[str]:
        """Set each value not already in the environment (as Core Tools does); names applied."""
        target = os.environ if environ is None else environ
        applied = []
        for name, value in self.values.items():
            if name not in target:
                target[name] = value
                applied.append(name)
        return applied
