"""Every setting the app reads: :class:`Settings`, read once, on first use.

Values come from the environment (app settings in Azure, ``local.settings.json`` ``Values`` under
``func start``). The model itself (:mod:`shared.settings_model`, pydantic-settings) loads with the
first read, so importing ``function_app`` stays cheap. A missing or malformed value raises
:class:`SettingsError` naming the variable and what is expected.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.settings_model import Settings as Settings

DEFAULT_OPENID_CONFIGURATION_URL = "https://api.aps.skype.com/v1/.well-known/OpenIdConfiguration"
DEFAULT_ALLOWED_ISSUERS = ("https://graph.microsoft.com", "https://api.botframework.com")
DEFAULT_GRAPH_BASE_URL = "https://graph.microsoft.com/v1.0"
DEFAULT_CLEANUP_SCHEDULE = "0 */5 * * * *"


class SettingsError(RuntimeError):
    """A setting is missing or malformed; the message names the variable and what it expects."""


def load_settings() -> Settings:
    """Read the settings from the environment now (tests call this after changing it)."""
    from shared.settings_model import read_settings

    return read_settings()


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read on first use."""
    return load_settings()


def __getattr__(name: str) -> Any:
    # ``from shared.settings import Settings`` still works; it loads the model then.
    if name == "Settings":
        from shared.settings_model import Settings

        return Settings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
