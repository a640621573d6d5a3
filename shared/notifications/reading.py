"""Reading a notification request's body: media type, size, JSON, the wire model, the ids.

Every check answers a :class:`~shared.problems.Problem` (415, 413 or 400) that names the field or
the failed check, so the sender sees why; nothing here touches storage.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from shared.graph.ids import GRAPH_ID_RULE, is_graph_id
from shared.problems import Problem, validation_problem

if TYPE_CHECKING:
    from pydantic import ValidationError

    from shared.graph.models import CommsNotification, CommsNotifications


MAX_BODY_BYTES = 1024 * 1024
JSON_MEDIA_TYPE = "application/json"
_NOT_NOTIFICATIONS = "Not a commsNotifications payload"
_TOO_DEEP = "body is nested too deeply to be a commsNotifications payload"
# A commsNotifications payload nests about 8 levels; Graph's deepest resources a few more.
MAX_NESTING = 64


def _deeper_than(data: object, limit: int) -> bool:
    """Whether JSON ``data`` nests more than ``limit`` arrays/objects (iteratively: no recursion)."""
    pending: list[tuple[object, int]] = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            children: Iterable[object] = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


# The legacy (Skype Bot Platform for Calling) "Conversation" request: its required fields, as
# documented in https://github.com/microsoft/BotBuilder-V3/blob/0f36a02e4fd1b6252a964bac90dda419b0cc0df6/en-us/Skype/calling-api-reference.md
_LEGACY_FIELDS = frozenset({"id", "participants", "callstate"})


class LegacyCallNotification(Exception):
    """The first incoming-call notification came in the legacy Skype format.

    Teams docs, "Incoming call notifications: technical details", protocol determination
    (https://learn.microsoft.com/microsoftteams/platform/bots/calls-and-meetings/call-notifications#protocol-determination):
    the bot answers ``204 No Content`` and the platform sends it again in the Graph format.
    """

    def __init__(self, legacy_call_id: str | None) -> None:
        super().__init__("legacy-format incoming call notification")
        self.legacy_call_id = legacy_call_id


def _legacy_call_notification(data: object) -> LegacyCallNotification | None:
    """The legacy request, when ``data`` is one (its documented required fields, any case)."""
    if not isinstance(data, dict) or "value" in data:
        return None
    keys = {str(key).lower(): key for key in data}
    if not keys.keys() >= _LEGACY_FIELDS:
        return None
    call_id = data[keys["id"]]
    return LegacyCallNotification(call_id if isinstance(call_id, str) else None)


def read_notifications(
    body: bytes, *, content_type: str | None, content_length: str | None
) -> CommsNotifications:
    """The payload of a notification request, or a :class:`Problem` (415, 413 or 400).

    Raises :class:`LegacyCallNotification` for the legacy-format first notification.
    """
    from pydantic import ValidationError

    from shared.graph.models import CommsNotifications

    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != JSON_MEDIA_TYPE:
        raise Problem(
            415,
            f"Content-Type must be {JSON_MEDIA_TYPE}, not {media_type[:80] or 'missing'}",
            headers={"Accept-Post": JSON_MEDIA_TYPE},
        )
    if content_length is not None and content_length.strip():
        try:
            declared = int(content_length)
        except ValueError:
            raise Problem(400, "Content-Length is not a number") from None
        if declared > MAX_BODY_BYTES:
            raise Problem(413, f"body exceeds {MAX_BODY_BYTES} bytes (Content-Length)")
    # The header can lie or be absent (chunked); the body actually received decides too.
    if len(body) > MAX_BODY_BYTES:
        raise Problem(413, f"body exceeds {MAX_BODY_BYTES} bytes")
    if not body:
        raise Problem(400, "body is empty; expected a commsNotifications JSON object")
    try:
        data = json.loads(body)
    except UnicodeDecodeError:
        raise Problem(400, "body is not UTF-8 encoded JSON") from None
    except ValueError as error:
        raise Problem(400, f"body is not valid JSON: {error}") from None
    except RecursionError:
        raise Problem(400, _TOO_DEEP) from None
    # The bound is ours, not the interpreter's: Python 3.13's JSON decoder nests far deeper
    # before a RecursionError than 3.11/3.12 do.
    if _deeper_than(data, MAX_NESTING):
        raise Problem(400, _TOO_DEEP)
    legacy = _legacy_call_notification(data)
    if legacy is not None:
        raise legacy
    try:
        payload = CommsNotifications.model_validate(data)
    except RecursionError:
        raise Problem(400, _TOO_DEEP) from None
    except ValidationError as error:
        raise validation_problem(
            _flatten_errors(error), status=400, title=_NOT_NOTIFICATIONS
        ) from None
    check_record_operation_ids(payload)
    return payload


def check_record_operation_ids(payload: CommsNotifications) -> None:
    """A record operation we cannot tie to a call and an operation id is refused as a whole.

    Refusing the payload (nothing is enqueued) is better than acknowledging it and losing the
    recording: the sender sees a 400 that names the field.
    """
    errors: list[dict[str, Any]] = []
    for index, notification in enumerate(payload.value):
        kind = notification.resource_kind
        if kind == "unknown":
            continue  # acknowledged and ignored: nothing is stored under its ids
        url_field = ("value", index, "resourceUrl")
        id_field = ("value", index, "resourceData", "id")
        if notification.call_id is None:
            if kind == "recordOperation":
                errors.append(
                    {
                        "loc": url_field,
                        "msg": "not a /communications/calls/{id}/operations/{id} URL",
                    }
                )
            continue
        ids = notification.resource_ids
        if ids is not None and not is_graph_id(ids.call_id):
            errors.append({"loc": url_field, "msg": f"call id is not {GRAPH_ID_RULE}"})
            continue
        if kind == "call":
            continue
        operation_id = _declared_operation_id(notification)
        if operation_id is None:
            if kind == "recordOperation":
                errors.append(
                    {
                        "loc": id_field,
                        "msg": "record operation has no id (neither in resourceData nor resourceUrl)",
                    }
                )
        elif not is_graph_id(operation_id):
            errors.append({"loc": id_field, "msg": f"operation id is not {GRAPH_ID_RULE}"})
    if errors:
        raise validation_problem(errors, status=400, title=_NOT_NOTIFICATIONS)


def _declared_operation_id(notification: CommsNotification) -> str | None:
    """The operation id as sent (before normalising): ``resourceData.id``, else the URL's."""
    data = notification.resource_data
    declared = data.get("id") if isinstance(data, dict) else getattr(data, "id", None)
    if declared:
        return str(declared)
    ids = notification.resource_ids
    return ids.operation_id if ids else None


def _flatten_errors(error: ValidationError, prefix: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """pydantic errors with nested model errors expanded, so a field path names the leaf.

    ``resourceData`` is validated inside a validator, whose nested error would otherwise surface
    as one message that embeds the offending input.
    """
    from pydantic import ValidationError

    flat: list[dict[str, Any]] = []
    for item in error.errors(include_input=False, include_url=False):
        location = prefix + tuple(item["loc"])
        nested = (item.get("ctx") or {}).get("error")
        if isinstance(nested, ValidationError):
            flat.extend(_flatten_errors(nested, location))
        else:
            flat.append({"loc": location, "msg": item["msg"].split("\n", 1)[0]})
    return flat
