"""The Bot Connector side of Teams chat: signs activities, posts them to the bot, takes replies.

Bot Framework signs the activities it posts to a bot's messaging endpoint with keys published at
``https://login.botframework.com/v1/.well-known/openidconfiguration`` (issuer
``https://api.botframework.com``, audience the bot's app id, a ``serviceurl`` claim, keys listed
with the channels they are ``endorsements`` for). The bot replies to
``{serviceUrl}/v3/conversations/{conversationId}/activities/{activityId}`` with its own token for
``https://api.botframework.com``. Here the simulator is that service URL: every reply is kept
with whether its bearer token was the bot's valid one.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .keys import NOTIFICATION_ISSUER, GraphTokenIssuer, KeyRing, SigningKey

BOT_FRAMEWORK_AUDIENCE = "https://api.botframework.com"
CHANNEL_ENDORSEMENTS = ("msteams", "webchat", "emulator")
OPENID_PATH = "/botframework/v1/.well-known/openidconfiguration"
KEYS_PATH = "/botframework/v1/keys"


@dataclass(frozen=True)
class BotReply:
    """One reply the bot sent; ``token_problem`` is None when its token was valid."""

    conversation_id: str
    activity_id: str | None
    body: Any
    token_problem: str | None
    token_app_id: str | None


class BotConnector:
    """The simulated Bot Connector service (its keys, its service URL, the replies it got)."""

    def __init__(
        self,
        bot_app_id: str,
        tokens: GraphTokenIssuer,
        base_url: Callable[[], str],
        *,
        require_bot_app_token: bool = False,
    ) -> None:
        self.bot_app_id = bot_app_id
        self.keys = KeyRing()
        self._tokens = tokens
        self._base_url = base_url
        self._require_bot_app_token = require_bot_app_token
        self._lock = threading.Lock()
        self._replies: list[BotReply] = []

    @property
    def service_url(self) -> str:
        """What this simulator puts in an activity's serviceUrl (and the token's claim)."""
        return f"{self._base_url()}/botconnector/"

    @property
    def openid_configuration_url(self) -> str:
        return f"{self._base_url()}{OPENID_PATH}"

    @property
    def replies(self) -> list[BotReply]:
        with self._lock:
            return list(self._replies)

    # -- what the Bot Connector sends ---------------------------------------------------------

    def claims(
        self, service_url: str | None = None, lifetime_seconds: int = 3600
    ) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": NOTIFICATION_ISSUER,
            "aud": self.bot_app_id,
            "serviceurl": service_url or self.service_url,
            "iat": now,
            "nbf": now - 5,
            "exp": now + lifetime_seconds,
        }

    def sign(
        self,
        overrides: dict[str, Any] | None = None,
        *,
        key: SigningKey | None = None,
        alg: str = "RS256",
        hs_secret: bytes | None = None,
    ) -> str:
        """A Bot Framework token; overrides replace claims, a None value removes one."""
        claims = self.claims()
        for name, value in (overrides or {}).items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return self.keys.sign(claims, key=key, alg=alg, hs_secret=hs_secret)

    def activity(
        self,
        kind: str = "message",
        *,
        text: str = "hello",
        channel_id: str = "msteams",
        conversation_id: str | None = None,
    ) -> dict[str, Any]:
        """A Teams-shaped activity from a user to the bot."""
        activity: dict[str, Any] = {
            "type": kind,
            "id": f"1{int(time.time() * 1000)}",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "serviceUrl": self.service_url,
            "channelId": channel_id,
            "from": {
                "id": "29:1user-simulated",
                "name": "Simulated User",
                "aadObjectId": str(uuid.uuid4()),
            },
            "conversation": {
                "id": conversation_id or f"a:1{uuid.uuid4().hex}",
                "conversationType": "personal",
            },
            "recipient": {"id": f"28:{self.bot_app_id}", "name": "Recording bot"},
        }
        if kind == "message":
            activity.update(text=text, textFormat="plain")
        return activity

    def post_activity(
        self,
        messaging_endpoint: str,
        activity: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        timeout: float = 15.0,
    ) -> httpx.Response:
        """POST an activity to the bot's messaging endpoint, signed as the Bot Connector does."""
        body = activity if activity is not None else self.activity()
        return httpx.post(
            messaging_endpoint,
            content=json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {token or self.sign({'serviceurl': body.get('serviceUrl')})}",
                "Content-Type": "application/json; charset=utf-8",
            },
            timeout=timeout,
        )

    # -- what the Bot Connector serves ---------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        document = self.keys.jwks()
        for key in document["keys"]:
            key["endorsements"] = list(CHANNEL_ENDORSEMENTS)
        return document

    def routes(self) -> list[Route]:
        async def openid_configuration(request: Request) -> Response:
            return JSONResponse(
                {
                    "issuer": NOTIFICATION_ISSUER,
                    "authorization_endpoint": "https://invalid.botframework.com",
                    "jwks_uri": f"{self._base_url()}{KEYS_PATH}",
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                }
            )

        async def jwks(request: Request) -> Response:
            return JSONResponse(self.jwks())

        async def reply(request: Request) -> Response:
            return await self._take_reply(request)

        conversation = "/botconnector/v3/conversations/{conversation_id}/activities"
        return [
            Route(OPENID_PATH, openid_configuration),
            Route(KEYS_PATH, jwks),
            Route(conversation, reply, methods=["POST"]),
            Route(f"{conversation}/{{activity_id}}", reply, methods=["POST"]),
        ]

    async def _take_reply(self, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        problem: str | None
        app_id: str | None = None
        if scheme.lower() != "bearer" or not token.strip():
            problem = "Authorization has been denied for this request (no bearer token)."
        else:
            problem, claims = self._tokens.claims_of(token.strip(), audience=BOT_FRAMEWORK_AUDIENCE)
            found = claims.get("appid")
            app_id = found if isinstance(found, str) else None
            if (
                problem is None
                and self._require_bot_app_token
                and ((app_id or "").lower() != self.bot_app_id.lower())
            ):
                problem = "The token's appid is not the bot's application id."
        try:
            body: Any = json.loads(await request.body())
        except ValueError:
            body = None
        with self._lock:
            self._replies.append(
                BotReply(
                    conversation_id=request.path_params["conversation_id"],
                    activity_id=request.path_params.get("activity_id"),
                    body=body,
                    token_problem=problem,
                    token_app_id=app_id,
                )
            )
        if problem is not None:
            return JSONResponse({"message": problem}, status_code=401)
        return JSONResponse({"id": f"1{int(time.time() * 1000)}"})
