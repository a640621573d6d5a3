"""Azurite, the Graph simulator and the app on 127.0.0.1, with settings pointing at each other.

The app runs under ``func start`` when Core Tools are on PATH (settings passed as environment
variables, which Core Tools lets win over ``local.settings.json``), else in this process under
the local Functions host. Every process and thread started here is stopped by :meth:`stop`,
also after a failed start.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

import httpx

from devtools.azurite import Azurite, free_port
from devtools.graphsim import GraphSimulator
from devtools.localhost import LocalFunctionsHost

ROOT = Path(__file__).resolve().parents[2]
DEMO_BOT_APP_ID = "00000000-0000-0000-0000-00000000b07a"
HostChoice = Literal["auto", "func", "local"]


def func_executable() -> str | None:
    """Core Tools' ``func``, when installed."""
    return shutil.which("func")


def app_settings(
    *,
    storage_connection_string: str,
    simulator: GraphSimulator,
    app_url: str,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The app settings that point the app at this Azurite and this simulator.

    The bot's Graph credential is the federated one, as in Azure: the managed identity's token
    is the client assertion for the bot's app registration, exchanged at the simulator's TLS token
    endpoint (whose CA the app trusts through GRAPH_AUTHORITY_CA_FILE).

    Holds ``IDENTITY_HEADER`` (the simulator's managed-identity secret): never print it.
    """
    federated = simulator.federated_env()
    if simulator.tls_ca_file:
        federated["GRAPH_AUTHORITY_CA_FILE"] = simulator.tls_ca_file
    extra = dict(overrides or {})
    if extra.get("TRANSCRIPTION_ENABLED") == "true" and not extra.get("TRANSCRIPTION_ENDPOINT"):
        extra["TRANSCRIPTION_ENDPOINT"] = simulator.base_url  # its fast-transcription stand-in
    return {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobsStorage": storage_connection_string,
        # GRAPH_BASE_URL, INBOUND_OPENID_CONFIGURATION_URL, BOT_APP_ID, IDENTITY_* ...
        **simulator.config()["env"],
        **federated,
        # Lifecycle events to the simulator's Event Grid topic (its subscriber keeps them).
        **simulator.events_env(),
        "CALLBACK_BASE_URL": app_url,
        "BOT_AUTO_ANSWER": "true",
        **extra,
    }


def provision_storage(connection_string: str) -> None:
    """Create the app's queues, container and table ahead of the first call.

    The app creates them itself on first use; doing it here first keeps the demo's first
    notification as fast as the others.
    """
    import asyncio

    from shared.settings import load_settings_from
    from shared.storage import StorageClients

    async def provision() -> None:
        # Only these two values: a malformed setting in the environment is the app's to report.
        clients = StorageClients(
            load_settings_from(
                {"AzureWebJobsStorage": connection_string, "BOT_APP_ID": "provisioning"}
            )
        )
        try:
            await clients.ensure_resources()
        finally:
            await clients.close()

    asyncio.run(provision())


def close_app_clients(host: LocalFunctionsHost) -> None:
    """Close the app's per-loop Graph and recording HTTP clients on the host's loop.

    The local host closes only the storage clients when it stops; without this the Graph
    credential's aiohttp session is reported unclosed at exit.
    """
    import sys

    async def close() -> None:
        if "shared.services" in sys.modules:
            await sys.modules["shared.services"].close_services()

    with contextlib.suppress(Exception):  # best effort: the host stops regardless
        host.run(close(), timeout=10)


class StackError(RuntimeError):
    """A part of the local stack did not start; the message says which and why."""


class InvalidAppSettings(StackError):
    """The app's settings do not validate; the message is the app's own one line
    (``Invalid app settings: NAME: reason``)."""


def local_settings_values(path: Path) -> dict[str, str]:
    """``Values`` of a local.settings.json (strings, as the hosts read them)."""
    import json

    values = json.loads(path.read_text(encoding="utf-8")).get("Values", {})
    return {str(name): str(value) for name, value in values.items()}


def check_app_settings(values: Mapping[str, str]) -> None:
    """Raise :class:`InvalidAppSettings` unless the app would accept these settings."""
    from shared.settings import SettingsError, load_settings_from

    try:
        load_settings_from(values)
    except SettingsError as error:
        raise InvalidAppSettings(str(error)) from None


class FuncHost:
    """``func start`` in its own process group, its output in a log file."""

    def __init__(
        self, port: int, env: Mapping[str, str], log: IO[bytes], *, startup_timeout: float = 120
    ) -> None:
        self.port = port
        self._env = dict(env)
        self._log = log
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FuncHost:
        executable = func_executable()
        if executable is None:
            raise StackError("`func` (Azure Functions Core Tools) is not on PATH")
        venv_bin = ROOT / ".venv" / "bin"
        env = {**os.environ, **self._env}
        if venv_bin.is_dir():
            # Core Tools starts the Python worker with the first python on PATH.
            env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
            env["VIRTUAL_ENV"] = str(venv_bin.parent)
        self._process = subprocess.Popen(
            [executable, "start", "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stop() ends func and the worker it spawned
        )
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise StackError(f"func start exited with {self._process.returncode} (see its log)")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/api/health", timeout=2).status_code == 200:
                    return self
            time.sleep(0.25)
        raise StackError(f"func start did not answer /api/health within {self._startup_timeout} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


class LocalStack:
    """Azurite (in memory), the Graph simulator and the app, started in that order.

    ``settings`` are extra app settings (e.g. a short retention). ``app_port``/``simulator_port``
    0 pick free ports. ``host`` chooses ``func start`` or the local host (``auto``: func if
    installed). ``load_local_settings`` lets the local host fill the remaining settings from
    ``local.settings.json`` (else ``local.settings.example.json``), as Core Tools would.
    """

    def __init__(
        self,
        *,
        host: HostChoice = "auto",
        settings: Mapping[str, str] | None = None,
        app_port: int = 0,
        simulator_port: int = 0,
        time_scale: float = 0.2,
        simulator_retention_seconds: float = 120.0,
        bot_app_id: str = DEMO_BOT_APP_ID,
        function_key: str | None = None,
        load_local_settings: bool = False,
        log: IO[bytes] | None = None,
    ) -> None:
        if host == "auto":
            host = "func" if func_executable() else "local"
        self.host_kind: Literal["func", "local"] = host
        self.app_port = app_port or free_port()
        self._simulator_port = simulator_port
        self._extra_settings = dict(settings or {})
        self._time_scale = time_scale
        self._simulator_retention = simulator_retention_seconds
        self._bot_app_id = bot_app_id
        # Under func the key is not checked locally (Core Tools skips function keys); the local
        # host checks it. Either way it is a development key, and it is never printed here.
        self._function_key = function_key
        self._load_local_settings = load_local_settings
        self._log = log
        self.azurite: Azurite | None = None
        self.simulator: GraphSimulator | None = None
        self.local_host: LocalFunctionsHost | None = None
        self.func_host: FuncHost | None = None
        self.settings: dict[str, str] = {}
        self._stack = contextlib.ExitStack()

    @property
    def app_url(self) -> str:
        return f"http://127.0.0.1:{self.app_port}"

    @property
    def function_key(self) -> str | None:
        if self.local_host is not None:
            return self.local_host.function_key
        return self._function_key

    def start_azurite(self) -> Azurite:
        self.azurite = self._stack.enter_context(Azurite())
        provision_storage(self.azurite.connection_string)
        return self.azurite

    def start_simulator(self) -> GraphSimulator:
        simulator = GraphSimulator(
            self._bot_app_id,
            port=self._simulator_port,
            time_scale=self._time_scale,
            recording_retention_seconds=self._simulator_retention,
            callback_url=f"{self.app_url}/api/calls",
            # Graph's calls API takes the bot app's tokens only: the federated path, as in Azure.
            require_bot_app_token=True,
        )
        try:
            self.simulator = self._stack.enter_context(simulator)
        except OSError as error:
            raise StackError(
                f"the Graph simulator cannot listen on 127.0.0.1:{self._simulator_port} "
                f"({error.strerror})"
            ) from None
        return self.simulator

    def start_app(self) -> str:
        """Start the app; returns how it runs (``func start`` or ``local host``)."""
        if self.azurite is None or self.simulator is None:
            raise StackError("start Azurite and the simulator before the app")
        self.settings = app_settings(
            storage_connection_string=self.azurite.connection_string,
            simulator=self.simulator,
            app_url=self.app_url,
            overrides=self._extra_settings,
        )
        local_settings = ROOT / "local.settings.json"
        if not local_settings.exists():
            local_settings = ROOT / "local.settings.example.json"
        # What the app will read: local.settings.json fills what the environment does not set
        # (Core Tools reads it always, the local host when asked), the stack's values win.
        reads_local = self.host_kind == "func" or self._load_local_settings
        check_app_settings(
            {
                **(local_settings_values(local_settings) if reads_local else {}),
                **os.environ,
                **self.settings,
            }
        )
        if self.host_kind == "func":
            log = self._log or self._stack.enter_context(open(os.devnull, "wb"))  # noqa: SIM115
            env = dict(self.settings)
            if self._function_key:
                # Core Tools does not check keys locally; a stand-in host that does, takes this.
                env["LOCAL_FUNCTION_KEY"] = self._function_key
            self.func_host = FuncHost(self.app_port, env, log)
            self._stack.callback(self.func_host.stop)
            self.func_host.start()
            return "func start"
        host = LocalFunctionsHost(
            port=self.app_port,
            env=self.settings,
            keys=[self._function_key] if self._function_key else None,
            app_root=ROOT,
            load_local_settings=self._load_local_settings,
            local_settings=local_settings,
            trace_recordings=True,
        )
        self._reset_app_settings_cache()
        try:
            self.local_host = self._stack.enter_context(host)
        except OSError as error:
            raise StackError(
                f"the app cannot listen on 127.0.0.1:{self.app_port} ({error.strerror})"
            ) from None
        self._stack.callback(close_app_clients, host)
        self._stack.callback(self._reset_app_settings_cache)
        return "local Functions host"

    @staticmethod
    def _reset_app_settings_cache() -> None:
        # The app reads its settings once per process; this process may host it more than once.
        from shared.settings import get_settings

        get_settings.cache_clear()

    def start(self) -> LocalStack:
        try:
            self.start_azurite()
            self.start_simulator()
            self.start_app()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the app, then the simulator, then Azurite (reverse order; idempotent)."""
        self._stack.close()
        self.local_host = None
        self.func_host = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def new_function_key() -> str:
    return secrets.token_urlsafe(32)
