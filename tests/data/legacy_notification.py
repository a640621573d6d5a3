"""A real example of the legacy (Skype Bot Platform for Calling) incoming-call notification.

Teams may send the first incoming-call notification in this legacy format; the bot answers
``204 No Content`` and receives it again in the Graph format (Teams docs, "Incoming call
notifications: technical details", protocol determination:
https://learn.microsoft.com/microsoftteams/platform/bots/calls-and-meetings/call-notifications#protocol-determination
, source MicrosoftDocs/msteams-docs msteams-platform/bots/calls-and-meetings/call-notifications.md).

The example below is the ``Conversation`` request of the Skype Calling API reference, copied
verbatim (HTTP request line, headers and body) from:
https://github.com/microsoft/BotBuilder-V3/blob/0f36a02e4fd1b6252a964bac90dda419b0cc0df6/en-us/Skype/calling-api-reference.md
("Conversation is a JSON body of a first request for new Skype voice call").
"""

from __future__ import annotations

import json
from typing import Any

SOURCE_URL = (
    "https://github.com/microsoft/BotBuilder-V3/blob/0f36a02e4fd1b6252a964bac90dda419b0cc0df6/"
    "en-us/Skype/calling-api-reference.md"
)

VERBATIM = r"""POST https://example.com/bot/oncallreceived/ HTTP/1.1
X-Microsoft-Skype-Chain-ID:  09021b10-38c7-4f7c-91ba-3b7a60aa9d54
Accept:  application/json
X-Microsoft-Skype-Message-ID:  a287213d-217d-4ed2-b994-ba6bdd734d2f
Content-Type:  application/json; charset=utf-8
{
  "id": "11111111-2222-3333-4444-555555555555",",
  "participants": [
    {
      "identity": "8:skype.user",
      "languageId": "en",
      "originator": true
    },
    {
      "identity": "28:b0100000-1d00-aaaa-bbbb-cccccccccccc",
      "originator": false
    }
  ],
  "isMultiparty": false,
  "presentedModalityTypes": [
    "audio"
  ],
  "callState": "incoming"
}
"""

# The published example has one typo that makes it invalid JSON: a stray `",` after the id.
# The platform sends valid JSON; this is the only change made to the example.
_TYPO = '"11111111-2222-3333-4444-555555555555",",'
_FIXED = '"11111111-2222-3333-4444-555555555555",'


def headers() -> dict[str, str]:
    """The example's request headers (name: value, as sent)."""
    head = VERBATIM.split("\n{", 1)[0].splitlines()[1:]
    return {name.strip(): value.strip() for name, value in (line.split(":", 1) for line in head)}


def body_bytes() -> bytes:
    """The example's body as the platform sends it (the documented typo corrected)."""
    body = "{" + VERBATIM.split("\n{", 1)[1]
    assert body.count(_TYPO) == 1
    return body.replace(_TYPO, _FIXED).encode()


def body() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(body_bytes())
    return parsed
