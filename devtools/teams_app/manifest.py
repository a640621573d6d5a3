"""The Teams app manifest: one calling bot, personal scope, audio only.

A user can call a bot only through a Teams app whose manifest declares it with
``supportsCalling: true`` (Microsoft's "Register calls and meetings bot for Microsoft Teams").
The schema version is one that ``@microsoft/app-manifest`` bundles, so the package is validated
offline against Microsoft's own schema (``validate_manifest.cjs``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from devtools.teams_app.icons import ACCENT_COLOR

# Microsoft's manifest reference names 1.22 as the current version; @microsoft/app-manifest
# 1.1.2 bundles its schema (it bundles up to 1.30, which Teams clients may not all read yet).
MANIFEST_VERSION = "1.22"
SCHEMA_URL = f"https://developer.microsoft.com/json-schemas/teams/v{MANIFEST_VERSION}/MicrosoftTeams.schema.json"
COLOR_ICON = "color.png"
OUTLINE_ICON = "outline.png"

# The Teams app id is derived from the bot's app id, so rebuilding the package for the same bot
# gives the same app (an upload updates it instead of adding a second app).
APP_ID_NAMESPACE = uuid.UUID("6f1f0d3e-5b8a-4f51-9f43-6a3c0e2b7d10")

GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


class ManifestInputError(ValueError):
    """An input to the manifest is unusable; the message names it and what is expected."""


@dataclass(frozen=True)
class Developer:
    """Shown on the app's details page in Teams: use your organisation's own pages."""

    name: str
    website_url: str
    privacy_url: str
    terms_of_use_url: str


PLACEHOLDER_DEVELOPER = Developer(
    name="Record response bot",
    website_url="https://example.com/record-response-bot",
    privacy_url="https://example.com/record-response-bot/privacy",
    terms_of_use_url="https://example.com/record-response-bot/terms",
)


def teams_app_id(bot_app_id: str) -> str:
    return str(uuid.uuid5(APP_ID_NAMESPACE, bot_app_id.lower()))


def _check_inputs(bot_app_id: str, version: str, developer: Developer) -> None:
    if not GUID.match(bot_app_id):
        raise ManifestInputError(
            f"BOT_APP_ID must be the bot's app registration client id (a GUID), got {bot_app_id!r}"
        )
    if not SEMVER.match(version):
        raise ManifestInputError(f"version must be MAJOR.MINOR.PATCH, got {version!r}")
    if not 0 < len(developer.name) <= 32:
        raise ManifestInputError("developer name must be 1 to 32 characters")
    for field, url in (
        ("website url", developer.website_url),
        ("privacy url", developer.privacy_url),
        ("terms of use url", developer.terms_of_use_url),
    ):
        if not url.startswith("https://"):
            raise ManifestInputError(f"developer {field} must be an https:// URL, got {url!r}")


def build_manifest(
    *,
    bot_app_id: str,
    version: str = "1.0.0",
    developer: Developer = PLACEHOLDER_DEVELOPER,
) -> dict[str, Any]:
    """The manifest.json content for the bot ``bot_app_id`` (the Azure Bot's msaAppId)."""
    _check_inputs(bot_app_id, version, developer)
    return {
        "$schema": SCHEMA_URL,
        "manifestVersion": MANIFEST_VERSION,
        "version": version,
        "id": teams_app_id(bot_app_id),
        "developer": {
            "name": developer.name,
            "websiteUrl": developer.website_url,
            "privacyUrl": developer.privacy_url,
            "termsOfUseUrl": developer.terms_of_use_url,
        },
        "name": {"short": "Record response", "full": "Record response bot"},
        "description": {
            "short": "Call the bot and record a short spoken answer.",
            "full": (
                "Call this bot from Teams: it answers, plays a beep and records your spoken "
                "answer (up to two minutes). The recording is kept briefly in your "
                "organisation's Azure storage and then deleted automatically."
            ),
        },
        "icons": {"color": COLOR_ICON, "outline": OUTLINE_ICON},
        "accentColor": ACCENT_COLOR,
        "bots": [
            {
                "botId": bot_app_id,
                "scopes": ["personal"],
                "supportsCalling": True,
                "supportsVideo": False,
                "supportsFiles": False,
                "isNotificationOnly": False,
            }
        ],
    }
