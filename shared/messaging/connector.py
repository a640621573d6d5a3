"""The bot's reply to a chat activity, sent to the Bot Connector at the activity's serviceUrl.

``POST {serviceUrl}/v3/conversations/{conversationId}/activities/{activityId}`` ("reply to
activity" in the Bot Connector REST API) with the bot's own token for
``https://api.botframework.com/.default``, from the credential the Graph client uses (the bot's
app registration). Bounded by a timeout; redirects are not followed, so the token goes nowhere
but the serviceUrl the activity's token vouched for.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from shared.tls import client_ssl_context

if TYPE_CHECKING:
    import httpx
    from azure.core.credentials_async import AsyncTokenCredential

    from shared.messaging.activity import Activity

log = logging.getLogger(__name__)

BOT_FRAMEWORK_SCOPE = "https://api.botframework.com/.default"
TOKEN_TIMEOUT_SECONDS = 5.0
REPLY_TIMEOUT_SECONDS = 5.0


class ReplyFailed(Exception):
    """The reply was not accepted; ``str(error)`` names why (a status or an error type)."""


def reply_url(activity: Activity) -> str:
    if activity.conversation_id is None:
        raise ReplyFailed("the activity has no conversation.id to reply in")
    base = activity.service_url.rstrip("/")
    conversation = quote(activity.conversation_id, safe="")
    url = f"{base}/v3/conversations/{conversation}/activities"
    return f"{url}/{quote(activity.id, safe='')}" if activity.id else url


def reply_body(activity: Activity, text: str) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "message", "text": text, "textFormat": "plain"}
    if activity.bot is not None:
        body["from"] = activity.bot
    if activity.sender is not None:
        body["recipient"] = activity.sender
    if activity.conversation is not None:
        body["conversation"] = activity.conversation
    if activity.id is not None:
        body["replyToId"] = activity.id
    return body


class BotConnectorClient:
    """Sends replies; the credential is the caller's (shared with the Graph client)."""

    def __init__(
        self, credential: AsyncTokenCredential, *, http: httpx.AsyncClient | None = None
    ) -> None:
        import httpx

        self._credential = credential
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(REPLY_TIMEOUT_SECONDS),
            follow_redirects=False,
            verify=client_ssl_context(),
        )

    async def reply(self, activity: Activity, text: str) -> int:
        """Send ``text`` as the reply to ``activity``; returns the connector's status."""
        import httpx

        url = reply_url(activity)
        try:
            token = await asyncio.wait_for(
                self._credential.get_token(BOT_FRAMEWORK_SCOPE), TOKEN_TIMEOUT_SECONDS
            )
        except TimeoutError:
            raise ReplyFailed(
                "no Bot Framework token for the bot: the token request timed out"
            ) from None
        except Exception as error:
            raise ReplyFailed(
                f"no Bot Framework token for the bot ({type(error).__name__})"
            ) from None
        try:
            response = await self._http.post(
                url,
                json=reply_body(activity, text),
                headers={"Authorization": f"Bearer {token.token}"},
            )
        except httpx.HTTPError as error:
            raise ReplyFailed(
                f"the Bot Connector is unreachable ({type(error).__name__})"
            ) from None
        if not 200 <= response.status_code < 300:
            raise ReplyFailed(f"the Bot Connector answered HTTP {response.status_code}")
        return response.status_code

    async def aclose(self) -> None:
        await self._http.aclose()
