"""The trace context a queue message carries: optional metadata that never decides a job's fate.

A job may carry its sender's W3C ``traceparent`` so that the worker's spans join the sender's
trace. Whatever else that field holds (a number, an object, a list, a malformed or overlong
string: an older sender, a hand-written message, a hostile one) is dropped here, with one warning
that names the field; the job then runs in a trace of its own. Every job model of every queue
reads the field through :func:`usable_traceparent`, so no queue can be stricter than another.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from shared.logevents import log_event

log = logging.getLogger(__name__)

TRACEPARENT_FIELD = "traceparent"
# W3C Trace Context: version-traceid-parentid-flags in lowercase hex; version 00 is 55 characters
# and a later version may only append fields, which this app's senders never write.
TRACEPARENT_LENGTH = 55
_TRACEPARENT = re.compile(
    r"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}"
)
_JSON_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),  # before int: a JSON true is a Python bool, which is an int too
    (int, "number"),
    (float, "number"),
    (str, "string"),
    (dict, "object"),
    (list, "array"),
)


def usable_traceparent(
    value: object, *, job: str, ids: Mapping[str, Any] | None = None
) -> str | None:
    """``value`` when it is a W3C ``traceparent`` a span can continue, otherwise None.

    ``None`` (a sender that traced nothing, a message older than the field) is silent; anything
    else that is unusable is logged once, at WARNING, naming ``job``'s field and the JSON type
    it held (never the value: it came from outside). ``ids`` are the job's ids known so far.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if len(text) == TRACEPARENT_LENGTH and _TRACEPARENT.fullmatch(text):
            return text
        problem = (
            f"longer than {TRACEPARENT_LENGTH} characters"
            if len(text) > TRACEPARENT_LENGTH
            else "not a W3C traceparent"
        )
    else:
        problem = "not a string"
    known = ids or {}
    log_event(
        log,
        "trace context ignored",
        level=logging.WARNING,
        job=job,
        field=TRACEPARENT_FIELD,
        json_type=_json_type(value),
        problem=problem,
        call_id=_id_or_none(known.get("call_id")),
        operation_id=_id_or_none(known.get("operation_id")),
    )
    return None


def _json_type(value: object) -> str:
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)), "other")


def _id_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
