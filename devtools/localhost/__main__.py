"""``python -m devtools.localhost [--port 7071] [--with-azurite] [--with-simulator]``.

Runs ``function_app.py`` from the current directory until Ctrl+C. ``--with-simulator`` also starts
an in-memory Azurite and the Graph simulator on loopback and points the app's settings at them
(it implies ``--with-azurite``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from devtools.localhost.host import DEFAULT_PORT, LocalFunctionsHost
from devtools.localhost.settings import HostConfigurationError, LocalSettings

logger = logging.getLogger("devtools.localhost")

DEFAULT_SIMULATOR_PORT = 7072
# The bot app id the example settings use, when neither the environment nor local.settings.json
# names one.
FALLBACK_BOT_APP_ID = "00000000-0000-0000-0000-00000000b07a"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.localhost",
        description="Local stand-in for `func start`: serves function_app.py on 127.0.0.1.",
    )
    parser.add_argument(
        "--port", type=int, default=None, help=f"HTTP port (default {DEFAULT_PORT})"
    )
    parser.add_argument("--app", default="function_app", help="module holding `app`")
    parser.add_argument("--app-root", type=Path, default=Path.cwd(), help="folder of host.json")
    parser.add_argument(
        "--settings",
        type=Path,
        default=None,
        help="local.settings.json to read (default: the one in --app-root)",
    )
    parser.add_argument("--with-azurite", action="store_true", help="start an in-memory Azurite")
    parser.add_argument(
        "--with-simulator",
        action="store_true",
        help="start Azurite and the Graph simulator and point the app at them",
    )
    parser.add_argument("--simulator-port", type=int, default=DEFAULT_SIMULATOR_PORT)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def _setting(name: str, local: LocalSettings | None) -> str | None:
    return os.environ.get(name) or (local.values.get(name) if local else None) or None


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # The Storage SDK logs every request at INFO.
    logging.getLogger("azure").setLevel(logging.WARNING)

    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    settings_path = args.settings or args.app_root / "local.settings.json"
    example = args.app_root / "local.settings.example.json"
    if args.settings is None and not settings_path.exists() and args.with_simulator:
        # Everything runs on loopback with the simulator: the example settings are complete.
        print(f"No {settings_path.name}: using {example.name}", file=sys.stderr)
        settings_path = example
    try:
        local = LocalSettings.load(settings_path) if settings_path.exists() else None
    except HostConfigurationError as error:
        logger.error("localhost outcome=not_started error=%s", error)
        return 1
    port = args.port if args.port is not None else (local.http_port if local else None)
    port = DEFAULT_PORT if port is None else port
    if port == 0:
        # The simulator needs the callback port before the host binds it.
        from devtools.azurite import free_port

        port = free_port()
    overrides: dict[str, str] = {}

    with contextlib.ExitStack() as stack:
        try:
            if args.with_azurite or args.with_simulator:
                from devtools.azurite import Azurite

                azurite = stack.enter_context(Azurite())
                overrides["AzureWebJobsStorage"] = azurite.connection_string
                logger.info(
                    "azurite queue=%d blob=%d table=%d",
                    azurite.queue_port,
                    azurite.blob_port,
                    azurite.table_port,
                )
            if args.with_simulator:
                from devtools.graphsim import GraphSimulator

                simulator = GraphSimulator(
                    _setting("BOT_APP_ID", local) or FALLBACK_BOT_APP_ID,
                    port=args.simulator_port,
                    callback_url=f"http://127.0.0.1:{port}/api/calls",
                )
                stack.enter_context(simulator)
                overrides.update(
                    {
                        "BOT_APP_ID": simulator.bot_app_id,
                        "GRAPH_BASE_URL": simulator.graph_base_url,
                        "INBOUND_OPENID_CONFIGURATION_URL": simulator.openid_configuration_url,
                        "GRAPH_CREDENTIAL_MODE": "managedIdentity",
                        "CALLBACK_BASE_URL": f"http://127.0.0.1:{port}",
                        "ALLOW_INSECURE_RECORDING_URLS": "true",
                        **simulator.managed_identity_env(),
                    }
                )
                logger.info("graph simulator url=%s", simulator.base_url)
            host = LocalFunctionsHost(
                args.app,
                port=port,
                env=overrides,
                app_root=args.app_root,
                local_settings=settings_path,
                trace_recordings=True,
            )
            stack.enter_context(host)
        except (HostConfigurationError, OSError, RuntimeError) as error:
            logger.error("localhost outcome=not_started error=%s", error)
            if local is None and example.exists():
                print(
                    "No local.settings.json: copy local.settings.example.json to "
                    "local.settings.json and adjust it.",
                    file=sys.stderr,
                )
            return 1
        print(f"Local Functions host on {host.base_url} (Ctrl+C to stop)", file=sys.stderr)
        for function in host.functions.http:
            methods = ",".join(function.methods)
            print(
                f"  {function.name}: [{methods}] {host.base_url}/{host.options.route_prefix}/"
                f"{function.route} ({function.auth_level})",
                file=sys.stderr,
            )
        for queue in host.functions.queues:
            print(f"  {queue.name}: queue {queue.queue_name}", file=sys.stderr)
        for timer in host.functions.timers:
            print(f"  {timer.name}: timer {timer.schedule}", file=sys.stderr)
        while not stopping.wait(0.5):
            pass
        logger.info("localhost stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
