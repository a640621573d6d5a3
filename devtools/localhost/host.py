"""The local Functions host: HTTP, queue and timer triggers of one app on one event loop.

A development stand-in for ``func start`` (see docs/local-host.md). ``start()``/``stop()`` run it
on its own event loop in a background thread; ``start_async()``/``stop_async()`` run it on the
caller's loop. Either way every invocation of the app runs on that one loop, as in the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import sys
import threading
from collections.abc import Awaitable, Coroutine, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import uvicorn

from devtools.localhost.discovery import (
    DiscoveredFunctions,
    discover_functions,
    load_function_app,
)
from devtools.localhost.http import build_http_app
from devtools.localhost.queues import QueueListener, connection_string
from devtools.localhost.settings import HostOptions, LocalSettings
from devtools.localhost.timers import TimerListener

if TYPE_CHECKING:
    from devtools.localhost.tracing import RecordingTraces

logger = logging.getLogger(__name__)

DEFAULT_PORT = 7071
LOOPBACK = "127.0.0.1"
KEY_SETTING = "LOCAL_FUNCTION_KEY"
T = TypeVar("T")


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the host's owner decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class LocalFunctionsHost:
    """Serve ``<module>.app`` locally: HTTP on 127.0.0.1, queues against Storage, timers.

    ``env`` values are set before the app is imported and override the environment;
    ``local.settings.json`` ``Values`` (from ``app_root``) fill in what is still unset, as Core
    Tools does. Both are undone by ``stop``. ``keys`` are the accepted function keys (default:
    ``LOCAL_FUNCTION_KEY``, else one generated and printed once).
    """

    def __init__(
        self,
        function_app_module: str = "function_app",
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        keys: Sequence[str] | str | None = None,
        app_root: Path | str | None = None,
        host_json: Path | str | None = None,
        local_settings: Path | str | None = None,
        load_local_settings: bool = True,
        drain_timeout: timedelta = timedelta(seconds=30),
        startup_timeout: float = 15.0,
        trace_recordings: bool = False,
    ) -> None:
        self.function_app_module = function_app_module
        # Dev only: an in-process OpenTelemetry SDK that logs each recording's trace id.
        self._trace_recordings = trace_recordings
        self.recording_traces: RecordingTraces | None = None
        self.app_root = Path(app_root) if app_root is not None else Path.cwd()
        self.host_json = Path(host_json) if host_json is not None else self.app_root / "host.json"
        self.local_settings_path = (
            Path(local_settings)
            if local_settings is not None
            else self.app_root / "local.settings.json"
        )
        self._load_local_settings = load_local_settings
        self._requested_port = port
        self._env = dict(env or {})
        self._keys = [keys] if isinstance(keys, str) else list(keys or [])
        self.drain_timeout = drain_timeout
        self.startup_timeout = startup_timeout

        self.port: int | None = None
        self.options = HostOptions()
        self.functions = DiscoveredFunctions(http=(), queues=(), timers=())
        self.queue_listeners: list[QueueListener] = []
        self.timer_listeners: list[TimerListener] = []
        self._saved_environ: dict[str, str | None] = {}
        self._server: _EmbeddedServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = False

    # -- what callers use --------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the local host is not started")
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def function_key(self) -> str:
        """The key a ``function``-level route accepts (development only; never log it)."""
        if not self._keys:
            raise RuntimeError("the local host is not started")
        return self._keys[0]

    def queue_listener(self, function_name: str) -> QueueListener:
        for listener in self.queue_listeners:
            if listener.function.name == function_name:
                return listener
        raise LookupError(f"no queue-triggered function {function_name!r}")

    def timer_listener(self, function_name: str) -> TimerListener:
        for listener in self.timer_listeners:
            if listener.function.name == function_name:
                return listener
        raise LookupError(f"no timer-triggered function {function_name!r}")

    # -- environment -------------------------------------------------------------------------

    def _set_environ(self, name: str, value: str) -> None:
        if name not in self._saved_environ:
            self._saved_environ[name] = os.environ.get(name)
        os.environ[name] = value

    def _prepare_environment(self) -> int | None:
        for name, value in self._env.items():
            self._set_environ(name, value)
        http_port = None
        if self._load_local_settings and self.local_settings_path.exists():
            local = LocalSettings.load(self.local_settings_path)
            for name, value in local.values.items():
                if name not in os.environ:
                    self._set_environ(name, value)
            http_port = local.http_port
            logger.info(
                "localhost settings=%s values=%d", self.local_settings_path, len(local.values)
            )
        return http_port

    def _restore_environment(self) -> None:
        for name, previous in self._saved_environ.items():
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous
        self._saved_environ.clear()

    def _resolve_keys(self) -> None:
        if self._keys:
            return
        configured = os.environ.get(KEY_SETTING)
        if configured:
            self._keys = [configured]
            return
        self._keys = [secrets.token_urlsafe(32)]
        # Printed once for the developer, never logged.
        print(
            f"Local function key (development only; send it as x-functions-key or ?code=): "
            f"{self._keys[0]}",
            file=sys.stderr,
            flush=True,
        )

    # -- lifecycle on the caller's loop ------------------------------------------------------

    async def start_async(self) -> LocalFunctionsHost:
        if self._started:
            raise RuntimeError("the local host is already started")
        self._started = True
        try:
            await self._start()
        except BaseException:
            await self.stop_async()
            raise
        return self

    async def _start(self) -> None:
        settings_port = self._prepare_environment()
        self.options = HostOptions.load(self.host_json)
        if str(self.app_root) not in sys.path:
            sys.path.insert(0, str(self.app_root))
        app = load_function_app(self.function_app_module)
        self.functions = discover_functions(app, os.environ)
        self._resolve_keys()

        http_app = build_http_app(
            self.functions.http,
            keys=self._keys,
            route_prefix=self.options.route_prefix,
            function_timeout=self.options.function_timeout,
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        port = self._requested_port if self._requested_port is not None else settings_port
        try:
            sock.bind((LOOPBACK, DEFAULT_PORT if port is None else port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            http_app,
            log_level="warning",
            access_log=False,  # the access log would carry ?code=<key>
            lifespan="off",
            timeout_graceful_shutdown=int(self.drain_timeout.total_seconds()) or 1,
        )
        self._server = _EmbeddedServer(config)
        self._spawn(self._server.serve(sockets=[sock]), "http")
        await self._wait_until_serving()

        for function in self.functions.queues:
            listener = QueueListener(
                function,
                self.options.queues,
                connection=connection_string(function.connection, os.environ),
                function_timeout=self.options.function_timeout,
                drain_timeout=self.drain_timeout,
            )
            self.queue_listeners.append(listener)
            self._spawn(listener.run(), f"queue:{function.name}")
        await self._wait_for_queues()
        for timer in self.functions.timers:
            timer_listener = TimerListener(timer, function_timeout=self.options.function_timeout)
            self.timer_listeners.append(timer_listener)
            self._spawn(timer_listener.run(), f"timer:{timer.name}")

        logger.info(
            "localhost started url=%s http=%s queues=%s timers=%s",
            self.base_url,
            ",".join(
                f"{f.name}:/{self.options.route_prefix}/{f.route}" for f in self.functions.http
            ),
            ",".join(f"{f.name}:{f.queue_name}" for f in self.functions.queues),
            ",".join(f"{f.name}:{f.schedule}" for f in self.functions.timers),
        )

    async def _wait_for_queues(self) -> None:
        """Return once every queue exists, so whatever the caller sends next is picked up."""
        if not self.queue_listeners:
            return
        waits = [asyncio.create_task(listener.ready.wait()) for listener in self.queue_listeners]
        _, pending = await asyncio.wait(waits, timeout=self.startup_timeout)
        for wait in pending:
            wait.cancel()
        if pending:
            logger.warning(
                "localhost outcome=queues_not_ready count=%d (Storage unreachable? polling "
                "continues with back-off)",
                len(pending),
            )

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=f"localhost:{name}")
        task.add_done_callback(self._report_crash)
        self._tasks.append(task)

    @staticmethod
    def _report_crash(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "localhost component=%s outcome=crashed",
                task.get_name(),
                exc_info=task.exception(),
            )

    async def _wait_until_serving(self) -> None:
        assert self._server is not None
        serving = self._tasks[-1]
        async with asyncio.timeout(self.startup_timeout):
            while not self._server.started:
                if serving.done():
                    raise RuntimeError(f"the HTTP server did not start on port {self.port}")
                await asyncio.sleep(0.01)

    async def stop_async(self) -> None:
        """Stop polling and timers, let in-flight invocations finish (bounded), stop HTTP."""
        for queue_listener in self.queue_listeners:
            queue_listener.stop()
        for timer_listener in self.timer_listeners:
            timer_listener.stop()
        if self._server is not None:
            self._server.should_exit = True
        if self._tasks:
            bound = self.drain_timeout.total_seconds() + 5
            _, pending = await asyncio.wait(self._tasks, timeout=bound)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._server = None
        if "shared.services" in sys.modules:
            # The app's clients (storage, Graph, recording HTTP) live on this loop; close them.
            await sys.modules["shared.services"].close_services()
        self._restore_environment()
        self.queue_listeners.clear()
        self.timer_listeners.clear()
        self._started = False
        logger.info("localhost stopped")

    async def __aenter__(self) -> LocalFunctionsHost:
        return await self.start_async()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop_async()

    # -- lifecycle on a background thread ----------------------------------------------------

    def start(self) -> LocalFunctionsHost:
        """Start on a new event loop in a background thread; returns once HTTP is serving."""
        if self._thread is not None:
            raise RuntimeError("the local host is already started")
        if self._trace_recordings:
            from devtools.localhost.tracing import install

            self.recording_traces = install()
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run_loop, args=(loop,), name="localhost", daemon=True
        )
        self._thread.start()
        try:
            self.run(self.start_async(), timeout=self.startup_timeout + 5)
        except BaseException:
            self._stop_loop()
            raise
        return self

    def run(self, work: Awaitable[T], timeout: float | None = None) -> T:
        """Run a coroutine on the host's loop from another thread (background mode)."""
        if self._loop is None:
            raise RuntimeError("the local host is not running on a background loop")

        async def wrapper() -> T:
            return await work

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout)

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
        self._loop = None
        self._thread = None

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            self.run(self.stop_async(), timeout=self.drain_timeout.total_seconds() + 15)
        finally:
            self._stop_loop()
            if self.recording_traces is not None:
                from devtools.localhost.tracing import uninstall

                uninstall()

    def __enter__(self) -> LocalFunctionsHost:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
