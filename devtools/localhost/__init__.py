"""Local Functions host: runs ``function_app.py`` without Core Tools (development only).

See docs/local-host.md. The app itself knows nothing about it: the same code runs under
``func start``.
"""

from devtools.localhost.discovery import DiscoveredFunctions, discover_functions, load_function_app
from devtools.localhost.host import DEFAULT_PORT, KEY_SETTING, LocalFunctionsHost
from devtools.localhost.settings import HostConfigurationError, HostOptions, LocalSettings
from devtools.localhost.timers import NcrontabSchedule

__all__ = [
    "DEFAULT_PORT",
    "KEY_SETTING",
    "DiscoveredFunctions",
    "HostConfigurationError",
    "HostOptions",
    "LocalFunctionsHost",
    "LocalSettings",
    "NcrontabSchedule",
    "discover_functions",
    "load_function_app",
]
