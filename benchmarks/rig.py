"""What every figure runs against: Azurite, the Graph simulator, the app's settings, counters.

Two simulators on purpose. The one that serves recordings runs in its own process
(``python -m devtools.graphsim serve``): its uvicorn thread would otherwise share this process's
GIL with the code being measured and its memory would blur the peak RSS of figure 2. The one that
signs notification tokens runs in this process (only its JWKS is fetched, once per validator).
Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote

import httpx

from benchmarks.harness import ROOT
from devtools.azurite import Azurite, free_port
from devtools.graphsim import GraphSimulator

BOT_APP_ID = "b3c1f5ad-0b6f-4f0c-9a5e-1b2c3d4e5f61"
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
WEBHOOK_URL = "http://localhost:7071/api/calls"
# Figure 2 downloads 100 MB recordings: the app's default cap (64 MB) would refuse them.
RECORDING_MAX_BYTES = 256 * 1024 * 1024
T = TypeVar("T")
S = TypeVar("S", bound="SimulatorProcess")


# --------------------------------------------------------------------------- the recordings server


@dataclass(frozen=True)
class Recording:
    """A recording served by the simulator process (location, token, size, SHA-256)."""

    location: str
    access_token: str
    size: int
    sha256: str
    recording_id: str


# The shared simulator's options: recordings made for a benchmark must outlive it, and an
# https listener, since the Event Grid topic (figure 10) takes tokens over TLS only.
RIG_SIMULATOR_OPTIONS = ("--retention-seconds", "3600", "--tls-port", "0")


class SimulatorProcess:
    """``python -m devtools.graphsim serve`` on a free loopback port, in its own process, with
    ``options`` (``serve``'s flags); a context manager too."""

    def __init__(
        self,
        *,
        options: tuple[str, ...] = RIG_SIMULATOR_OPTIONS,
        startup_timeout: float = 30.0,
        http_timeout: float = 60.0,
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._options = options
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.base_url, timeout=http_timeout, trust_env=False)

    def __enter__(self: S) -> S:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> SimulatorProcess:
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devtools.graphsim",
                "serve",
                "--port",
                str(self.port),
                "--bot-app-id",
                BOT_APP_ID,
                *self._options,
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"simulator exited with {self._process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("/_sim/health", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("the simulator process did not start in time")

    def add_recording(self, size_bytes: int) -> Recording:
        response = self.http.post("/_sim/recordings", json={"sizeBytes": size_bytes})
        response.raise_for_status()
        info = response.json()
        return Recording(
            location=info["location"],
            access_token=info["accessToken"],
            size=int(info["size"]),
            sha256=info["sha256"],
            recording_id=info["id"],
        )

    def delete_recording(self, recording: Recording) -> None:
        self.http.delete(f"/_sim/recordings/{recording.recording_id}")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def stop(self) -> None:
        self.http.close()
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


# --------------------------------------------------------------------------- storage request counting


class StorageRequestCounter:
    """Counts every HTTP request the azure SDK sends to Azurite, by service and method.

    It wraps the aiohttp transport's ``send`` for as long as it is active, so it sees the app's
    own clients too, and what the service sees: one request per retry, and one request for a
    whole blob batch however many deletions it carries.
    """

    def __init__(
        self, azurite: Azurite, *, classify: Callable[[str, Any], str | None] | None = None
    ) -> None:
        self._services = {
            azurite.blob_port: "blob",
            azurite.queue_port: "queue",
            azurite.table_port: "table",
        }
        # ``classify(service, request)``: a label added to the key ("table GET time index").
        self._classify = classify
        self.requests: Counter[str] = Counter()
        self._original: Any = None

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def by_service(self) -> dict[str, int]:
        totals: Counter[str] = Counter()
        for key, count in self.requests.items():
            totals[key.split(" ", 1)[0]] += count
        return dict(totals)

    def reset(self) -> None:
        self.requests.clear()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Requests sent inside this block (a floor measured in between) are not counted."""
        saved = Counter(self.requests)
        try:
            yield
        finally:
            self.requests = saved

    def __enter__(self) -> StorageRequestCounter:
        from urllib.parse import urlsplit

        from azure.core.pipeline.transport import AioHttpTransport

        original = AioHttpTransport.send
        self._original = original
        counter = self

        async def send(transport: Any, request: Any, **kwargs: Any) -> Any:
            port = urlsplit(request.url).port
            service = counter._services.get(port or 0, "other")
            label = counter._classify(service, request) if counter._classify else None
            key = f"{service} {request.method}" + (f" {label}" if label else "")
            counter.requests[key] += 1
            return await original(transport, request, **kwargs)

        AioHttpTransport.send = send
        return self

    def __exit__(self, *exc: object) -> None:
        from azure.core.pipeline.transport import AioHttpTransport

        AioHttpTransport.send = self._original


_KEY_IN_URL = re.compile(r"(PartitionKey|RowKey)(?:=| eq )'((?:[^']|'')*)'")
_KEY_IN_JSON = re.compile(r'"(PartitionKey|RowKey)": "([^"]*)"')


def ledger_rows(service: str, request: Any) -> str | None:
    """Which of the ledger's rows a table request touches, for :class:`StorageRequestCounter`.

    Read from the keys the request names: in its URL (a point read or write, a query's filter),
    its JSON body (a create), or the entity requests of a batch. "time index" (``~time~``),
    "caller index" (``~caller~``), "call row" (a call's ``~call`` row: its guard and metadata),
    "operation" (the call's other rows, or a query over its partition), "audit", "claim";
    several joined by "+" (one query reads an operation row and its call's row). None for other
    services; "other" for a request that names no key (a scan, a table's creation).
    """
    if service != "table":
        return None
    from shared.audit import AUDIT_PARTITION_PREFIX
    from shared.ledger.identity import CALLER_PARTITION_PREFIX
    from shared.ledger.index import TIME_PARTITION_PREFIX
    from shared.ledger.rows import CALL_GUARD_ROW, CLAIM_PARTITION_PREFIX

    body = getattr(request, "body", None)
    text = (
        unquote(request.url)
        + " "
        + (unquote(body.decode(errors="replace")) if isinstance(body, bytes) else str(body or ""))
    )
    found = [*_KEY_IN_URL.findall(text), *_KEY_IN_JSON.findall(text)]
    partitions = {value.replace("''", "'") for name, value in found if name == "PartitionKey"}
    rows = {value.replace("''", "'") for name, value in found if name == "RowKey"}
    prefixes = {
        TIME_PARTITION_PREFIX: "time index",
        CALLER_PARTITION_PREFIX: "caller index",
        AUDIT_PARTITION_PREFIX: "audit",
        CLAIM_PARTITION_PREFIX: "claim",
    }
    kinds = {
        next((kind for prefix, kind in prefixes.items() if key.startswith(prefix)), "call")
        for key in partitions
    }
    if "call" in kinds:
        kinds.discard("call")
        if CALL_GUARD_ROW in rows:
            kinds.add("call row")
        if not rows or rows - {CALL_GUARD_ROW}:
            # Another row of the call's partition, or a query over it (its operations).
            kinds.add("operation")
    return "+".join(sorted(kinds)) or "other"


# --------------------------------------------------------------------------- the rig


class Rig:
    """Azurite, both simulators and the app's settings, for the whole run."""

    def __init__(self) -> None:
        self.azurite = Azurite()
        self.signer = GraphSimulator(BOT_APP_ID, TENANT_ID)
        self.recordings = SimulatorProcess()
        self._saved_env: dict[str, str | None] = {}

    def start(self) -> Rig:
        self.azurite.start()
        self.signer.start()
        self.recordings.start()
        self.apply_settings()
        return self

    def stop(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for stop in (self.recordings.stop, self.signer.stop, self.azurite.stop):
            with contextlib.suppress(Exception):
                stop()

    def __enter__(self) -> Rig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connection_string(self) -> str:
        return self.azurite.connection_string

    def app_env(self) -> dict[str, str]:
        """The app settings the benchmarks run the app with (also for child processes)."""
        return {
            "AzureWebJobsStorage": self.connection_string,
            "BOT_APP_ID": BOT_APP_ID,
            "INBOUND_OPENID_CONFIGURATION_URL": self.signer.openid_configuration_url,
            "ALLOW_INSECURE_RECORDING_URLS": "true",
            "RECORDING_MAX_BYTES": str(RECORDING_MAX_BYTES),
        }

    def child_env(self) -> dict[str, str]:
        env = {**os.environ, **self.app_env()}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def apply_settings(self) -> None:
        from shared.settings import get_settings

        for name, value in self.app_env().items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        get_settings.cache_clear()

    def bearer(self) -> str:
        """A fresh notification token, as the platform signs one per request."""
        return self.signer.sign_token()


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """Run one coroutine on a fresh loop and close what the app opened on it."""

    async def main() -> T:
        from shared.services import close_services

        try:
            return await factory()
        finally:
            await close_services()

    return asyncio.run(main())


# --------------------------------------------------------------------------- notifications


def new_id() -> str:
    return str(uuid.uuid4())


def completion_payload(
    call_id: str, operation_id: str, *, location: str, access_token: str
) -> dict[str, Any]:
    """A completed recordOperation notification, shaped like the Graph reference page's."""
    from tests.data.source_document import COMPLETION_NOTIFICATION

    body = copy.deepcopy(COMPLETION_NOTIFICATION)
    notification = body["value"][0]
    compact_call = call_id.replace("-", "").upper()
    compact_op = operation_id.replace("-", "").upper()
    resource = f"/communications/calls/{compact_call}/operations/{compact_op}"
    notification["resourceUrl"] = resource
    data = notification["resourceData"]
    data["@odata.id"] = resource
    data["id"] = operation_id
    data["recordingLocation"] = location
    data["recordingAccessToken"] = access_token
    return body


def placeholder_token() -> str:
    return f"bench-{secrets.token_urlsafe(24)}"


def webhook_function() -> Callable[[Any], Awaitable[Any]]:
    """The registered ``notifications`` function, called as the Functions host would."""
    from tests.support.functions import registered

    function: Callable[[Any], Awaitable[Any]] = registered("notifications")
    return function


def webhook_request(body: dict[str, Any], bearer: str) -> Any:
    from tests.support.functions import http_request

    return http_request(
        "POST",
        WEBHOOK_URL,
        body=body,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {bearer}",
            "User-Agent": "Microsoft-Skype/3.0,(Calling/1.0)",
        },
    )


async def download_stored(services: Any, message: Any, ledger: Any) -> None:
    """The real download worker on one received job, as the queue trigger runs it (``services``:
    the app's; ``ledger``: the one to write, possibly counted); raises unless it stored."""
    from shared.download import process_job

    outcome = await process_job(
        message.content,
        settings=services.settings,
        http=services.recording_http,
        container=services.storage.container,
        ledger=ledger,
        dequeue_count=message.dequeue_count,
    )
    if outcome.outcome != "stored":
        raise RuntimeError(f"download ended {outcome.outcome}: {outcome.failure_reason}")


@contextlib.contextmanager
def app_settings_env(values: dict[str, str], *, removed: tuple[str, ...] = ()) -> Iterator[None]:
    """The app's environment with ``values`` set and ``removed`` unset, restored afterwards.

    The app reads its settings once per process: the cache is cleared on the way in and out.
    """
    from shared.settings import get_settings

    saved = {name: os.environ.get(name) for name in [*values, *removed]}
    os.environ.update(values)
    for name in removed:
        os.environ.pop(name, None)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """The app logs one line per outcome; thousands of them would time the terminal, not us."""
    import logging

    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(previous)
