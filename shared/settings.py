"""Every setting the app reads: :class:`Settings`, read once, on first use.

Values come from the environment (app settings in Azure, ``local.settings.json`` ``Values`` under
``func start``). The model itself (:mod:`shared.settings_model`, pydantic-settings) loads with the
first read, so importing ``function_app`` stays cheap; this module imports it, never the other way
round. A missing or malformed value raises :class:`SettingsError` naming the variable and what is
expected.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

    from shared.settings_model import Settings as Settings


class SettingsError(RuntimeError):
    """A setting is missing or malformed; the message names the variable and what it expects."""


def load_settings() -> Settings:
    """Read the settings from the environment now (tests call this after changing it)."""
    from pydantic import ValidationError

    from shared.settings_model import Settings

    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None


def load_settings_from(values: Mapping[str, str]) -> Settings:
    """The settings an environment holding exactly ``values`` gives (``""`` means unset, as in
    app settings); what tools that start the app check first, with the app's own message."""
    from pydantic import ValidationError

    try:
        return _given_settings().model_validate(
            {name: value for name, value in values.items() if value != ""}
        )
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None


@functools.cache
def _given_settings() -> type[Settings]:
    """The settings model reading the values it is given, and no environment or file (built
    once: a pydantic model class is costly to create)."""
    from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

    from shared.settings_model import Settings

    class Given(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings,)

    return Given


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{name}: {message}" if name else message)
    return "Invalid app settings: " + "; ".join(problems)


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
