"""One log line per event, the same fields as text and as structured attributes.

``log_event(log, "download.stored", call_id=..., size_bytes=...)`` writes
``download.stored call_id=... size_bytes=...`` and sets the same fields as attributes of the
log record (``record.call_id``...), which is what log handlers such as OpenTelemetry's export as
attributes (Application Insights: ``customDimensions``), and on the current span when one is
recording: a text search, a log query and a trace all use one set of names. Values are escaped:
an id sent by a caller can never break a line or forge another key=value pair.

Secrets do not belong here; callers pass ids, counts, reasons, never tokens. As a guard, a field
whose name says it holds one (``token``, ``authorization``, ``sig``, ``key``, ``secret``...) is
written as ``[redacted]`` in all three places, whatever its value.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from shared.telemetry import set_span_attributes

# A bare value: anything else is quoted, with backslash escapes for quotes and control
# characters, so one record is always one line and "k=v" inside a value stays a value.
_BARE = re.compile(r"^[A-Za-z0-9_.:/@+\-#,]+$")
_MAX_VALUE_LENGTH = 300
# Attributes every LogRecord has: a field by one of these names is stored as ``field_<name>``.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
# Words of a field name (split at "_" and "-") that say the value is a credential.
_SECRET_WORDS = frozenset(
    {
        "authorization",
        "bearer",
        "jwt",
        "key",
        "password",
        "sas",
        "secret",
        "sig",
        "signature",
        "token",
    }
)
REDACTED = "[redacted]"


def escape(value: object) -> str:
    """``value`` as it appears after ``key=`` in a log line."""
    text = str(value)
    if len(text) > _MAX_VALUE_LENGTH:
        text = text[:_MAX_VALUE_LENGTH] + "…"
    if _BARE.fullmatch(text):
        return text
    escaped = text.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return f'"{escaped}"'


def is_secret_field(name: str) -> bool:
    """Whether a field's name says it holds a credential (``access_token``, ``api_key``...)."""
    return any(word in _SECRET_WORDS for word in re.split(r"[_\-.]+", name.lower()))


def format_fields(fields: Mapping[str, Any]) -> str:
    """``key=value`` pairs for the fields that are set, in the given order."""
    return " ".join(
        f"{name}={escape(value)}" for name, value in fields.items() if value is not None
    )


def log_event(log: logging.Logger, event: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` with ``fields``: ``None`` values are left out of every form.

    Events at INFO and above also set the fields as attributes of the current span (when one
    is recording), whatever the logger's level: a trace carries them even when logs are
    filtered. Debug events stay out of spans (they would overwrite an outcome with noise).
    """
    present = {
        name: (REDACTED if is_secret_field(name) else value)
        for name, value in fields.items()
        if value is not None
    }
    if level >= logging.INFO:
        set_span_attributes(present)
    if not log.isEnabledFor(level):
        return
    text = format_fields(present)
    log.log(
        level,
        "%s %s" if text else "%s%s",
        event,
        text,
        extra={
            "event": event,
            **{(f"field_{k}" if k in _RESERVED else k): v for k, v in present.items()},
        },
        stacklevel=2,
    )


# Libraries that log every request at INFO: the Azure SDK's HTTP logging policy (each storage
# request's headers, about 22 records per download) and httpx (each URL, a SAS query included).
# Under the Functions Python worker the root logger is at INFO and every record is forwarded, so
# the app sets their level itself.
QUIET_LIBRARIES = ("azure", "httpx", "httpcore")


def log_failure(
    log: logging.Logger,
    event: str,
    error: BaseException,
    level: int = logging.ERROR,
    /,
    **fields: Any,
) -> None:
    """A failure line for ``event`` (an error unless ``level`` says less): the error's type only.

    An SDK error's text can quote a request or a response body (a token, a queue message's
    contents); its type says enough to act on, and the traceback goes to debug where it is needed.
    """
    log_event(log, event, level=level, **fields, error=type(error).__name__)


def quiet_library_loggers(level: int = logging.WARNING) -> None:
    """Raise the chatty libraries' loggers to ``level`` (called once, at start-up)."""
    for name in QUIET_LIBRARIES:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < level:
            logger.setLevel(level)
