"""GraphSimulator: runs the simulator app under uvicorn in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import uvicorn

from .app import SimContext, build_app, parse_api_fault
from .botconnector import BotConnector
from .calls import CallEngine, EngineSettings, check_keys, id_key
from .entra import EntraApiTokens
from .eventgrid import EventGridTopic
from .keys import GRAPH_TOKEN_ROLES, GraphTokenIssuer, KeyRing, SigningKey, notification_claims
from .models import SCENARIOS, Call, CallOptions, Delivery, Operation, RequestRecord
from .recordings import Recording, RecordingStore, parse_fault
from .throttling import CallsThrottle
from .tls import TlsFiles, make_tls_files

# An obviously fictitious tenant: no real directory has it.
DEFAULT_TENANT_ID = "00000000-0000-0000-0000-00000000cafe"
DEFAULT_MI_CLIENT_ID = "5c1f0e2a-7d33-4e0b-9a57-0f6f2b8d6e11"
DEFAULT_MI_PRINCIPAL_ID = "0b6b9c5e-5d2f-4a37-8d0a-3f3c1b2a9e11"
T = TypeVar("T")


@dataclass(frozen=True)
class RecordingHandle:
    """What a download test needs to know about one recording."""

    _recording: Recording

    @property
    def recording_id(self) -> str:
        return self._recording.recording_id

    @property
    def location(self) -> str:
        return self._recording.location

    @property
    def access_token(self) -> str:
        return self._recording.access_token

    @property
    def sha256(self) -> str:
        return self._recording.sha256

    @property
    def size(self) -> int:
        return self._recording.size

    @property
    def duration_seconds(self) -> float:
        return self._recording.duration_seconds

    @property
    def content_type(self) -> str:
        return self._recording.content_type

    @property
    def call_id(self) -> str | None:
        return self._recording.call_id

    @property
    def operation_id(self) -> str | None:
        return self._recording.operation_id

    @property
    def request_count(self) -> int:
        return self._recording.request_count

    @property
    def pending_faults(self) -> list[str]:
        return list(self._recording.faults)

    def iter_bytes(self) -> Iterator[bytes]:
        """The exact bytes served, generated again (for byte-by-byte comparisons)."""
        return self._recording.iter_bytes()


class GraphSimulator:
    """A local Microsoft Graph calling simulator on 127.0.0.1 (see docs/simulator.md)."""

    def __init__(
        self,
        bot_app_id: str,
        tenant_id: str = DEFAULT_TENANT_ID,
        *,
        allow_insecure_callbacks: bool = True,
        recording_retention_seconds: float = 30.0,
        time_scale: float = 0.02,
        port: int = 0,
        callback_url: str | None = None,
        answer_timeout_seconds: float = 15.0,
        notification_timeout_seconds: float = 10.0,
        slow_drip_seconds: float = 2.0,
        compact_ids_in_operation_urls: bool = True,
        managed_identity_client_id: str = DEFAULT_MI_CLIENT_ID,
        identity_header: str | None = None,
        notification_retries: int = 3,
        notification_retry_backoff_seconds: float = 0.5,
        managed_identity_principal_id: str = DEFAULT_MI_PRINCIPAL_ID,
        tls_port: int | None = 0,
        require_bot_app_token: bool = False,
        tls_dir: str | None = None,
        graph_token_roles: tuple[str, ...] = GRAPH_TOKEN_ROLES,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if notification_retries < 0:
            raise ValueError("notification_retries must be >= 0")
        self.bot_app_id = bot_app_id
        self.tenant_id = tenant_id
        self._port = port
        self._base_url = ""
        # The Entra-style token endpoint over TLS (None: no TLS listener).
        self._tls_port = tls_port
        # Where the CA and server certificate go: a fixed folder keeps the CA file's path
        # stable across restarts (SSL_CERT_FILE); by default a temporary one, removed at stop.
        self._tls_dir = Path(tls_dir) if tls_dir else None
        self._tls_files: TlsFiles | None = None
        self._tls_sock: socket.socket | None = None
        self._tls_server: uvicorn.Server | None = None
        self._tls_task: asyncio.Task[None] | None = None
        self._app: Any = None
        self.keys = KeyRing()
        self.graph_tokens = GraphTokenIssuer(
            tenant_id,
            managed_identity_client_id,
            principal_id=managed_identity_principal_id,
            roles=graph_token_roles,
        )
        self.bot_connector = BotConnector(
            bot_app_id,
            self.graph_tokens,
            lambda: self._base_url,
            require_bot_app_token=require_bot_app_token,
        )
        self.recordings_store = RecordingStore(lambda: self._base_url)
        self.entra = EntraApiTokens(tenant_id, bot_app_id)
        self.eventgrid = EventGridTopic(lambda: self._base_url, self.graph_tokens.audience_problem)
        self.identity_header = identity_header or secrets.token_urlsafe(24)
        self.engine = CallEngine(
            EngineSettings(
                bot_app_id=bot_app_id,
                tenant_id=tenant_id,
                time_scale=time_scale,
                recording_retention_seconds=recording_retention_seconds,
                answer_timeout_seconds=answer_timeout_seconds,
                notification_timeout_seconds=notification_timeout_seconds,
                compact_ids_in_operation_urls=compact_ids_in_operation_urls,
                default_callback_url=callback_url,
                notification_retries=notification_retries,
                notification_retry_backoff_seconds=notification_retry_backoff_seconds,
            ),
            self.keys,
            self.recordings_store,
            lambda: self.graph_base_url,
        )
        self._ctx = SimContext(
            keys=self.keys,
            graph_tokens=self.graph_tokens,
            recordings=self.recordings_store,
            engine=self.engine,
            identity_header=self.identity_header,
            base_url=lambda: self._base_url,
            slow_drip_seconds=slow_drip_seconds,
            allow_insecure_callbacks=allow_insecure_callbacks,
            config=self.config,
            bot_app_id=bot_app_id,
            tenant_id=tenant_id,
            require_bot_app_token=require_bot_app_token,
            graph_base_url=lambda: self.graph_base_url,
            entra=self.entra,
            bot_connector=self.bot_connector,
            eventgrid=self.eventgrid,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def _on_startup(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.engine.start()
        if self._tls_sock is not None and self._tls_files is not None:
            # The same app on a second, TLS listener in this loop (no second lifespan).
            config = uvicorn.Config(
                self._app,
                log_level="warning",
                access_log=False,
                lifespan="off",
                ssl_certfile=str(self._tls_files.cert_file),
                ssl_keyfile=str(self._tls_files.key_file),
                timeout_graceful_shutdown=2,
            )
            self._tls_server = uvicorn.Server(config)
            self._tls_task = self._loop.create_task(
                self._tls_server.serve(sockets=[self._tls_sock])
            )

    async def _on_shutdown(self) -> None:
        if self._tls_server is not None and self._tls_task is not None:
            self._tls_server.should_exit = True
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._tls_task, 5)
        await self.engine.stop()

    @staticmethod
    def _listen(port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        return sock

    def start(self, timeout: float = 10.0) -> GraphSimulator:
        """Listen on 127.0.0.1 (OSError if the port is taken) and serve until stop()."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        sock = self._listen(self._port)
        if self._tls_port is not None:
            try:
                self._tls_sock = self._listen(self._tls_port)
            except OSError:
                sock.close()
                raise
            self._tls_port = self._tls_sock.getsockname()[1]
            self._tls_files = make_tls_files(self._tls_dir)
        self._port = sock.getsockname()[1]
        self._base_url = f"http://127.0.0.1:{self._port}"
        app = build_app(self._ctx, self._on_startup, self._on_shutdown)
        self._app = app
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.run(sockets=[sock]), name="graphsim", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tls_ready = self._tls_sock is None or (
                self._tls_server is not None and self._tls_server.started
            )
            if server.started and tls_ready:
                try:
                    if httpx.get(f"{self._base_url}/_sim/health", timeout=1.0).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
            if not self._thread.is_alive():
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("the Graph simulator did not start")

    def stop(self) -> None:
        if self._tls_server is not None:
            self._tls_server.should_exit = True  # both listeners wind down together
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None
        self._loop = None
        self._tls_server = None
        self._tls_task = None
        if self._tls_sock is not None:
            self._tls_sock.close()
            self._tls_sock = None
        if self._tls_files is not None:
            if self._tls_dir is None:
                shutil.rmtree(self._tls_files.directory, ignore_errors=True)
            self._tls_files = None

    def __enter__(self) -> GraphSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run a coroutine on the simulator's loop from any other thread."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("simulator not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def calls_throttle(self) -> CallsThrottle:
        """Graph's per-app-per-tenant throttling of the calls API (off until configured)."""
        return self._ctx.throttle

    # -- URLs --------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def graph_base_url(self) -> str:
        return f"{self._base_url}/v1.0"

    @property
    def openid_configuration_url(self) -> str:
        return f"{self._base_url}/v1/.well-known/OpenIdConfiguration"

    @property
    def management_openid_configuration_url(self) -> str:
        """The tenant's Entra-style OpenID configuration (keys of the management API's tokens)."""
        return f"{self._base_url}/{self.tenant_id}/v2.0/.well-known/openid-configuration"

    def management_env(self) -> dict[str, str]:
        """Settings that make the app accept this simulator's tokens for its management API."""
        return {
            "MANAGEMENT_TENANT_ID": self.tenant_id,
            "MANAGEMENT_OPENID_CONFIGURATION_URL": self.management_openid_configuration_url,
        }

    def management_token(self, *roles: str, **options: Any) -> str:
        """An Entra access token for the bot's API carrying ``roles`` (see EntraApiTokens)."""
        return self.entra.token(roles=roles, **options)

    @property
    def jwks_url(self) -> str:
        return f"{self._base_url}/v1/keys"

    @property
    def identity_endpoint(self) -> str:
        return f"{self._base_url}/msi/token"

    @property
    def tls_port(self) -> int | None:
        return self._tls_port if self._tls_sock is not None else None

    @property
    def authority_host(self) -> str | None:
        """The Entra-style authority (https, a CA of its own): ``AZURE_AUTHORITY_HOST`` or
        azure-identity's ``authority=``. None when the simulator runs without TLS."""
        port = self.tls_port
        return f"https://127.0.0.1:{port}" if port is not None else None

    @property
    def tls_ca_file(self) -> str | None:
        """PEM file of the CA that signed the TLS listener's certificate (exists while running)."""
        return str(self._tls_files.ca_file) if self._tls_files is not None else None

    def token_endpoint(self, tenant_id: str | None = None) -> str | None:
        authority = self.authority_host
        if authority is None:
            return None
        return f"{authority}/{tenant_id or self.tenant_id}/oauth2/v2.0/token"

    def federated_env(self) -> dict[str, str]:
        """Settings for the app's federated credential mode against this simulator.

        The managed identity (IDENTITY_*) signs the client assertion; GRAPH_APP_CLIENT_ID is the
        bot; AZURE_AUTHORITY_HOST points azure-identity at the TLS token endpoint, whose CA is
        ``tls_ca_file`` (the app's HTTP client must trust it; see docs/simulator.md).
        """
        env = {
            **self.managed_identity_env(),
            "GRAPH_CREDENTIAL_MODE": "federated",
            "GRAPH_APP_CLIENT_ID": self.bot_app_id,
            "GRAPH_TENANT_ID": self.tenant_id,
        }
        if self.authority_host is not None:
            env["AZURE_AUTHORITY_HOST"] = self.authority_host
        return env

    def config(self) -> dict[str, Any]:
        """What an app needs to point at this simulator (served at GET /_sim/config)."""
        return {
            "baseUrl": self.base_url,
            "botAppId": self.bot_app_id,
            "tenantId": self.tenant_id,
            "env": {
                "GRAPH_BASE_URL": self.graph_base_url,
                "INBOUND_OPENID_CONFIGURATION_URL": self.openid_configuration_url,
                "BOT_FRAMEWORK_OPENID_CONFIGURATION_URL": (
                    self.bot_connector.openid_configuration_url
                ),
                "BOT_APP_ID": self.bot_app_id,
                "ALLOW_INSECURE_RECORDING_URLS": "true",
                **self.managed_identity_env(),
                **self.management_env(),
            },
            # The federated credential path (not in "env": the app's default mode is unchanged).
            "federatedEnv": self.federated_env(),
            # Lifecycle events to the simulated Event Grid topic (not in "env": opt-in).
            "eventsEnv": self.events_env(),
            "authorityHost": self.authority_host,
            "tlsCaFile": self.tls_ca_file,
            "managedIdentity": {
                "clientId": self.graph_tokens.client_id,
                "principalId": self.graph_tokens.principal_id,
            },
        }

    @property
    def events_endpoint(self) -> str | None:
        """The simulated Event Grid topic's endpoint (on the TLS listener: bearer tokens only go
        over TLS), or None when the simulator runs without TLS."""
        authority = self.authority_host
        return f"{authority}/api/events" if authority is not None else None

    def events_env(self) -> dict[str, str]:
        """Settings that make the app publish its lifecycle events to this simulator's topic."""
        if self.events_endpoint is None or self.tls_ca_file is None:
            return {}
        return {
            "EVENTS_ENDPOINT": self.events_endpoint,
            "GRAPH_AUTHORITY_CA_FILE": self.tls_ca_file,
        }

    def received_events(self, call_id: str | None = None) -> list[dict[str, Any]]:
        """The CloudEvents the built-in subscriber received (for ``call_id``), in arrival order."""
        return [item["event"] for item in self.eventgrid.received_events(call_id)]

    def queue_eventgrid_faults(self, *faults: str) -> None:
        """Answer the next publishes with these faults (``500``, ``429:S``, ``503:S``)."""
        with self.eventgrid.lock:
            self.eventgrid.faults.extend(faults)

    def managed_identity_env(self) -> dict[str, str]:
        """Environment variables that point azure-identity's ManagedIdentityCredential here."""
        return {
            "IDENTITY_ENDPOINT": self.identity_endpoint,
            "IDENTITY_HEADER": self.identity_header,
        }

    # -- tokens ------------------------------------------------------------------------------

    def rotate_key(self, *, keep_old: bool = True) -> str:
        """New notification signing key; returns its kid. The JWKS keeps the old key if keep_old."""
        return self.keys.rotate(keep_old=keep_old).kid

    @property
    def current_kid(self) -> str:
        return self.keys.current.kid

    def sign_token(
        self,
        claims_overrides: dict[str, Any] | None = None,
        *,
        key: SigningKey | None = None,
        alg: str = "RS256",
        headers: dict[str, Any] | None = None,
        hs_secret: bytes | None = None,
    ) -> str:
        """A notification-style JWT; overrides replace claims, a None value removes one."""
        claims = notification_claims(self.bot_app_id, self.tenant_id)
        for name, value in (claims_overrides or {}).items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return self.keys.sign(claims, key=key, alg=alg, headers=headers, hs_secret=hs_secret)

    def graph_token(self) -> str:
        """A valid Graph access token, as the managed-identity endpoint would issue."""
        return self.graph_tokens.issue()[0]

    # -- calls -------------------------------------------------------------------------------

    def place_call(
        self,
        scenario: str = "max-duration",
        *,
        callback_url: str | None = None,
        duplicate_established: bool = False,
        out_of_order: bool = False,
        notification_delay_seconds: float = 0.0,
        duplicate_completion: bool = False,
        recording_faults: list[str] | None = None,
        speech_seconds: float = 3.0,
        hangup_after_completion_seconds: float | None = None,
        keys_after_prompts: list[str] | None = None,
        caller: str = "teams-user",
        caller_number: str | None = None,
    ) -> str:
        """Place an incoming call to the bot; returns the call id. ``caller``: who calls
        (``teams-user``, ``pstn`` to the bot's resource account, ``anonymous``, ``guest``)."""
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
        for fault in recording_faults or []:
            parse_fault(fault)
        for keys in keys_after_prompts or []:
            check_keys(keys)
        options = CallOptions(
            scenario=scenario,
            callback_url=callback_url,
            duplicate_established=duplicate_established,
            out_of_order=out_of_order,
            notification_delay_seconds=notification_delay_seconds,
            duplicate_completion=duplicate_completion,
            recording_faults=list(recording_faults or []),
            speech_seconds=speech_seconds,
            hangup_after_completion_seconds=hangup_after_completion_seconds,
            keys_after_prompts=list(keys_after_prompts or []),
            caller=caller,
            **({"caller_number": caller_number} if caller_number else {}),
        )
        return self._run(self.engine.place_call(options)).id

    def caller_hangup(self, call_id: str) -> None:
        """The caller hangs up: the call ends and a terminated notification is sent."""
        self._run(self.engine.caller_hangup(call_id))

    def press_keys(self, call_id: str, keys: str) -> int:
        """The caller presses DTMF keys (e.g. "1", "12#"); returns how many tone notifications
        were sent (one per key once the bot called subscribeToTone, else none)."""
        return self._run(self.engine.press_keys(call_id, keys))

    def prompt_failure(self, operation_id: str) -> str | None:
        """Why the operation's prompt could not be played (fetch or format), if it could not."""
        with self.engine.lock:
            return self.engine.prompt_failures.get(self.operation(operation_id).id)

    def call(self, call_id: str) -> Call:
        return self.engine.find_call(call_id)

    def operation(self, operation_id: str) -> Operation:
        op = self.engine.operations.get(id_key(operation_id))
        if op is None:
            raise KeyError(operation_id)
        return op

    @property
    def calls(self) -> list[Call]:
        with self.engine.lock:
            return list(self.engine.calls.values())

    @property
    def operations(self) -> list[Operation]:
        with self.engine.lock:
            return list(self.engine.operations.values())

    def add_api_faults(self, action: str, faults: list[str]) -> None:
        """Faults for the next calls-API requests of one action (answer, recordResponse,
        playPrompt, hangup, getCall, getOperation, or * for any)."""
        for fault in faults:
            parse_api_fault(fault)
        with self.engine.lock:
            self.engine.api_faults.setdefault(action, []).extend(faults)

    # -- recordings --------------------------------------------------------------------------

    def add_recording(
        self,
        size_bytes: int | None = None,
        duration_seconds: float | None = None,
        faults: list[str] | None = None,
        content_type: str = "application/octet-stream",
        *,
        expires_after_seconds: float | None = None,
    ) -> RecordingHandle:
        """A recording that needs no call (download worker tests, benchmarks)."""
        recording = self.recordings_store.create(
            size_bytes=size_bytes,
            duration_seconds=duration_seconds,
            faults=faults,
            content_type=content_type,
            expires_after_seconds=expires_after_seconds,
        )
        return RecordingHandle(recording)

    @property
    def recordings(self) -> list[RecordingHandle]:
        return [RecordingHandle(r) for r in self.recordings_store.all()]

    def recording_for(self, operation_id: str) -> RecordingHandle | None:
        key = id_key(operation_id)
        for recording in self.recordings_store.all():
            if recording.operation_id and id_key(recording.operation_id) == key:
                return RecordingHandle(recording)
        return None

    def delete_recording(self, recording_id: str) -> bool:
        return self.recordings_store.delete(recording_id)

    # -- inspection --------------------------------------------------------------------------

    @property
    def deliveries(self) -> list[Delivery]:
        with self.engine.lock:
            return list(self.engine.deliveries)

    @property
    def requests(self) -> list[RequestRecord]:
        with self.engine.lock:
            return list(self.engine.requests)

    def notifications(self, call_id: str | None = None) -> list[dict[str, Any]]:
        """Every notification sent (flattened from the deliveries), optionally for one call."""
        return [
            n
            for d in self.deliveries
            if call_id is None or id_key(d.call_id) == id_key(call_id)
            for n in d.notifications
        ]

    def reset_journal(self) -> None:
        """Forget deliveries and requests (for session-scoped fixtures)."""
        with self.engine.lock:
            self.engine.deliveries.clear()
            self.engine.requests.clear()

    def wait_for(
        self, predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.01
    ) -> T:
        """Poll predicate until it returns something truthy; return it or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            time.sleep(interval)

    async def async_wait_for(
        self, predicate: Callable[[], T], within: float = 5.0, interval: float = 0.01
    ) -> T:
        """wait_for for async tests: yields to the caller's loop between polls."""
        deadline = time.monotonic() + within
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {within} s")
            await asyncio.sleep(interval)

    def wait_for_notification(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        """Wait until a sent notification matches; return that notification."""

        def find() -> dict[str, Any] | None:
            return next((n for n in self.notifications() if match(n)), None)

        result = self.wait_for(find, timeout)
        assert result is not None
        return result
