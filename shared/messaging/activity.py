"""A Bot Framework activity as ``/api/messages`` receives it: only the fields the bot uses.

The body is read before the token is verified (the token must be checked against the
activity's ``serviceUrl`` and ``channelId``), so it is bounded and parsed without a model; the bot
acts on nothing until the token is valid.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from shared.problems import Problem

MAX_ACTIVITY_BYTES = 256 * 1024
LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass(frozen=True)
class Activity:
    """The parts of an activity the bot reads; ``sender``/``bot`` are the ``from``/``recipient``
    channel accounts, echoed (swapped) in a reply."""

    type: str
    id: str | None
    service_url: str
    channel_id: str
    conversation_id: str | None
    sender: dict[str, Any] | None
    bot: dict[str, Any] | None
    conversation: dict[str, Any] | None

    @property
    def is_message(self) -> bool:
        return self.type.lower() == "message"


def _bad(detail: str) -> Problem:
    return Problem(400, detail, "Invalid activity")


def read_activity(body: bytes, *, content_type: str | None) -> Activity:
    """The activity in ``body``, or a 400/413/415 problem naming what is wrong."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise Problem(415, "an activity is sent as application/json", "Unsupported media type")
    if len(body) > MAX_ACTIVITY_BYTES:
        raise Problem(413, f"an activity is at most {MAX_ACTIVITY_BYTES} bytes", "Too large")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _bad("the body is not JSON") from None
    if not isinstance(data, dict):
        raise _bad("the body is not a JSON object")
    kind = data.get("type")
    service_url = data.get("serviceUrl")
    if not isinstance(kind, str) or not kind:
        raise _bad("the activity has no type")
    if not isinstance(service_url, str) or not service_url:
        raise _bad("the activity has no serviceUrl")
    channel_id = data.get("channelId")
    conversation = data.get("conversation")
    conversation_id = conversation.get("id") if isinstance(conversation, dict) else None
    activity_id = data.get("id")
    sender, bot = data.get("from"), data.get("recipient")
    return Activity(
        type=kind,
        id=activity_id if isinstance(activity_id, str) and activity_id else None,
        service_url=service_url,
        channel_id=channel_id if isinstance(channel_id, str) else "",
        conversation_id=(
            conversation_id if isinstance(conversation_id, str) and conversation_id else None
        ),
        sender=sender if isinstance(sender, dict) else None,
        bot=bot if isinstance(bot, dict) else None,
        conversation=conversation if isinstance(conversation, dict) else None,
    )


def check_service_url(url: str, *, allow_insecure: bool) -> None:
    """Raise a 400 problem unless the bot may send its token to ``url``.

    Bot Framework's service URLs are https on public hosts; http and loopback hosts are for the
    local simulator only (``ALLOW_INSECURE_RECORDING_URLS``, refused in Azure).
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise _bad("serviceUrl is not an absolute http(s) URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise _bad("serviceUrl must not carry credentials, a query or a fragment")
    if allow_insecure:
        return
    if parts.scheme != "https":
        raise _bad("serviceUrl must be https")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if host in LOOPBACK_NAMES or host.endswith(".localhost") or (address and address.is_loopback):
        raise _bad("serviceUrl must not be a loopback host")
