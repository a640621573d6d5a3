"""Graph's call and operation ids, and the resource URLs that carry them: plain Python.

Kept apart from the wire models (:mod:`shared.graph.models`) so that checking or normalising an id
loads no pydantic: the triggers import this at indexing, the models load with the first body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_OPERATION_URL = re.compile(
    r"^/?(?:communications|app)/calls/(?P<call>[^/?#]+)/operations/(?P<op>[^/?#]+)/?$",
    re.IGNORECASE,
)
_CALL_URL = re.compile(r"^/?(?:communications|app)/calls/(?P<call>[^/?#]+)/?$", re.IGNORECASE)


@dataclass(frozen=True)
class ResourceIds:
    call_id: str
    operation_id: str | None = None


def parse_resource_url(resource_url: str) -> ResourceIds | None:
    """Call id (and operation id) from ``/communications/calls/{id}[/operations/{opId}]``.

    The legacy ``/app/calls/{id}`` form is accepted too. Absolute URLs (Graph's ``Location``
    header) work as well. Returns ``None`` for anything else.
    """
    path = re.sub(r"^https?://[^/]+(?:/(?:v1\.0|beta))?", "", resource_url.strip())
    if match := _OPERATION_URL.match(path):
        return ResourceIds(call_id=match["call"], operation_id=match["op"])
    if match := _CALL_URL.match(path):
        return ResourceIds(call_id=match["call"])
    return None


# The ids Graph gives calls and operations are GUIDs, written compact (in resourceUrl) or with
# dashes (in Location and resourceData). Nothing else is accepted where an id enters the app:
# a key storage cannot hold ("." or "..", control characters, 1 000 characters) is refused at the
# edge with the field named, instead of failing later where no one sees it.
GRAPH_ID = re.compile(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
GRAPH_ID_RULE = "a GUID, compact or with dashes"


def is_graph_id(value: str | None) -> bool:
    return bool(value) and GRAPH_ID.fullmatch(value or "") is not None


def normalize_id(value: str) -> str:
    """One canonical form for an id Graph writes both ways.

    The same GUID appears as ``57dab8b1-894c-...`` in a ``Location`` header and as
    ``57DAB8B1894C...`` in a notification's ``resourceUrl``; storage keys must not depend on which.
    """
    compact = value.replace("-", "").lower()
    if re.fullmatch(r"[0-9a-f]{32}", compact):
        return "-".join((compact[:8], compact[8:12], compact[12:16], compact[16:20], compact[20:]))
    return value.strip()
