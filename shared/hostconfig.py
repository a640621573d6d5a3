"""What the app needs to know of the host's configuration, read from ``host.json`` itself.

``host.json`` is the one source of these values (it is deployed beside the app); an app setting
``AzureFunctionsJobHost__extensions__queues__maxDequeueCount`` overrides it in Azure as it does
for the host, so the app reads that first.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"
_OVERRIDE = "AzureFunctionsJobHost__extensions__queues__maxDequeueCount"
# The host's own default when host.json says nothing.
_HOST_DEFAULT_MAX_DEQUEUE_COUNT = 5


@functools.cache
def max_dequeue_count() -> int:
    """The delivery after which the host moves a failing queue message to the poison queue."""
    override = os.environ.get(_OVERRIDE, "").strip()
    if override.isdigit():
        return int(override)
    try:
        config = json.loads(HOST_JSON.read_text(encoding="utf-8"))
        value = config["extensions"]["queues"]["maxDequeueCount"]
    except (OSError, ValueError, KeyError, TypeError):
        return _HOST_DEFAULT_MAX_DEQUEUE_COUNT
    return int(value) if isinstance(value, int) else _HOST_DEFAULT_MAX_DEQUEUE_COUNT


def is_last_delivery(dequeue_count: int | None) -> bool:
    """Whether a failing delivery is the message's last: the host poisons it next (unknown: no)."""
    return dequeue_count is not None and dequeue_count >= max_dequeue_count()
