"""``make demo``: one simulated Teams call, end to end, on this machine.

Starts Azurite, the Graph simulator and the app on 127.0.0.1, places a ``max-duration`` call and
follows it: the bot answers and asks for a recorded response, the simulator records a few seconds
of audio and notifies, the worker stores the recording, the status API hands out a read URL, and
the cleanup deletes the recording when its (demo-short) retention ends. One line per step with
✓/✗ and its time, then a short report. Exits 0 only if every step happened; stops everything it
started in every case. Secrets (function key, tokens, SAS URLs) are never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx

from devtools.demo.stack import LocalStack, StackError, new_function_key

T = TypeVar("T")

# Short enough to watch the cleanup expire the recording: retention 6 s, cleanup every 2 s.
DEMO_SETTINGS = {
    "BOT_RECORD_MAX_DURATION_SECONDS": "5",
    "BOT_RECORD_PLAY_BEEP": "true",
    "BOT_HANG_UP_AFTER_RECORDING": "true",
    "RECORDING_RETENTION_MINUTES": "0.1",
    "CLEANUP_SCHEDULE": "*/2 * * * * *",
}
# With --transcribe: the simulator's fast-transcription endpoint stands in for Azure AI Speech
# (the stack points TRANSCRIPTION_ENDPOINT at it).
TRANSCRIBE_SETTINGS = {"TRANSCRIPTION_ENABLED": "true", "TRANSCRIPTION_LOCALES": "en-US"}
# Wall seconds per simulated second: 5 s of audio are recorded in about 1 s.
DEMO_TIME_SCALE = 0.2
HTTP_TIMEOUT = httpx.Timeout(10.0)


class StepFailed(Exception):
    """A demo step did not happen; ``reason`` says why (never a secret)."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


class NotYet(Exception):
    """A bounded wait ran out."""


def wait_until(condition: Callable[[], T | None], *, within: float, what: str) -> T:
    """Poll ``condition`` (every 50 ms) until it returns something truthy, at most ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise NotYet(f"no {what} within {within:g} s")
        time.sleep(0.05)


def describe(error: BaseException) -> str:
    """An error as one line without secrets: URLs lose their query (keys, SAS signatures)."""
    if isinstance(error, httpx.HTTPError):
        try:
            url = error.request.url
            where = f" ({error.request.method} {url.scheme}://{url.host}:{url.port}{url.path})"
        except RuntimeError:
            where = ""
        return f"{type(error).__name__}{where}"
    if isinstance(error, StackError | NotYet | AssertionError):
        return str(error)
    return type(error).__name__


@dataclass
class Step:
    title: str
    detail: str = ""


class Progress:
    """Prints one line per step: ✓ or ✗, the title, a detail and how long it took."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.steps: list[tuple[str, bool, float]] = []

    def say(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[Step]:
        started = time.monotonic()
        current = Step(title)
        try:
            yield current
        except StepFailed as failed:
            self._line(False, title, failed.reason, started)
            raise
        except Exception as error:
            reason = describe(error)
            self._line(False, title, reason, started)
            raise StepFailed(title, reason) from None
        self._line(True, title, current.detail, started)

    def _line(self, ok: bool, title: str, detail: str, started: float) -> None:
        elapsed = time.monotonic() - started
        self.steps.append((title, ok, elapsed))
        mark = "✓" if ok else "✗"
        text = f"  {mark} {title}"
        if detail:
            text += f" — {detail}"
        self.say(f"{text}  [{elapsed:.2f} s]")


@dataclass
class Report:
    call_id: str = ""
    operation_id: str = ""
    result: str = ""
    size_bytes: int | None = None
    sha256: str = ""
    sha256_matches: bool = False
    latency_seconds: float | None = None
    answer_latency_seconds: float | None = None
    trace_id: str | None = None
    transcript: str | None = None
    reprompt: str | None = None
    status_answer: dict[str, Any] = field(default_factory=dict)
    expired_at: str = ""
    events: list[str] = field(default_factory=list)


class StatusApi:
    """The app's status API as a downstream service calls it: an Entra token with the
    Recordings.Read role (the simulator's), plus the function key when the host checks keys
    (MANAGEMENT_FUNCTION_KEYS=true); both in headers, never in a URL."""

    def __init__(self, base_url: str, function_key: str | None, token: str | None = None) -> None:
        headers = {"x-functions-key": function_key} if function_key else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(base_url=base_url, headers=headers, timeout=HTTP_TIMEOUT)

    def get(self, call_id: str, operation_id: str) -> dict[str, Any] | None:
        response = self._client.get(f"/api/recordings/{call_id}/{operation_id}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise AssertionError(f"status API answered {response.status_code}")
        body: dict[str, Any] = response.json()
        return body

    def list(self, call_id: str) -> list[dict[str, Any]]:
        """Every operation of a call (GET /api/recordings?callId=)."""
        response = self._client.get("/api/recordings", params={"callId": call_id})
        if response.status_code != 200:
            raise AssertionError(f"status API answered {response.status_code}")
        operations: list[dict[str, Any]] = response.json()["operations"]
        return operations

    def close(self) -> None:
        self._client.close()


def redacted(body: dict[str, Any]) -> dict[str, Any]:
    """The status API's answer, printable: the read URL is a bearer credential."""
    shown = dict(body)
    if "recordingUrl" in shown:
        shown["recordingUrl"] = "<read-only SAS URL, hidden>"
    return shown


def _id_key(value: str) -> str:
    return value.replace("-", "").lower()


def run_demo(stack: LocalStack, progress: Progress) -> Report:
    report = Report()
    with progress.step("Azurite (in memory)") as step:
        azurite = stack.start_azurite()
        step.detail = (
            f"blob :{azurite.blob_port}, queue :{azurite.queue_port}, table :{azurite.table_port}"
        )
    with progress.step("Graph simulator") as step:
        simulator = stack.start_simulator()
        step.detail = simulator.base_url
    with progress.step("App") as step:
        how = stack.start_app()
        health = httpx.get(f"{stack.app_url}/api/health", timeout=HTTP_TIMEOUT)
        if health.status_code != 200:
            raise AssertionError(f"GET /api/health answered {health.status_code}")
        step.detail = f"{how} on {stack.app_url}, /api/health 200"

    status_api = StatusApi(
        stack.app_url, stack.function_key, simulator.management_token("Recordings.Read")
    )
    try:
        _follow_one_call(stack, progress, status_api, report)
    finally:
        status_api.close()
    return report


def _prompt_name(body: Any) -> str | None:
    prompts = (body or {}).get("prompts") or []
    if not prompts:
        return None
    uri = str((prompts[0].get("mediaInfo") or {}).get("uri", ""))
    return uri.rsplit("/", 1)[-1] or None


def _silence_then_answer(
    stack: LocalStack, progress: Progress, status_api: StatusApi, report: Report
) -> None:
    """A second caller says nothing at first: the bot re-prompts and records again."""
    simulator = stack.simulator
    assert simulator is not None
    with progress.step("Silent caller re-prompted, then recorded") as step:
        call_id = simulator.place_call("silence-then-answer")

        def attempts() -> list[Any] | None:
            found = [
                r
                for r in simulator.requests
                if r.method == "POST"
                and r.path.endswith("/recordResponse")
                and _id_key(call_id) in _id_key(r.path)
                and r.status_code is not None
            ]
            return found if len(found) >= 2 else None

        first, second = wait_until(attempts, within=30, what="a second recordResponse")[:2]

        def operations() -> list[dict[str, Any]] | None:
            listed = status_api.list(call_id)
            done = [o for o in listed if o.get("status") in ("stored", "failed")]
            stored = [o for o in listed if o.get("status") == "stored"]
            return listed if len(done) >= 2 and stored else None

        listed = wait_until(operations, within=30, what="the second attempt stored")
        silent = next((o for o in listed if o.get("status") == "failed"), {})
        step.detail = (
            f"call {call_id}: attempt 1 {silent.get('resultMeaning', 'failed')}; "
            f"prompt {_prompt_name(second.body) or '?'} then attempt 2 stored "
            f"(attempt 1 prompted with {_prompt_name(first.body) or 'none'})"
        )
        report.reprompt = step.detail


def _follow_one_call(
    stack: LocalStack, progress: Progress, status_api: StatusApi, report: Report
) -> None:
    simulator = stack.simulator
    assert simulator is not None

    def graph_request(action: str) -> Any:
        for request in simulator.requests:
            if (
                request.method == "POST"
                and request.path.endswith(f"/{action}")
                and _id_key(call_id) in _id_key(request.path)
                and request.status_code is not None
            ):
                return request
        return None

    with progress.step("Simulated Teams call placed") as step:
        call_id = simulator.place_call("max-duration")
        report.call_id = call_id
        step.detail = f"call {call_id}, scenario max-duration"

    with progress.step("Bot answered") as step:
        answer = wait_until(lambda: graph_request("answer"), within=15, what="answer request")
        if answer.status_code >= 300:
            raise AssertionError(f"Graph refused the answer with {answer.status_code}")
        media = (answer.body or {}).get("mediaConfig", {}).get("@odata.type", "?")
        step.detail = f"POST …/answer {answer.status_code} ({media.rsplit('.', 1)[-1]})"
        # Graph's deadline: the answer must come within 15 s of the incoming-call notification.
        # The simulator lists a delivery once the webhook has replied, after the answer.
        incoming = wait_until(
            lambda: next(
                (
                    delivery.sent_at
                    for delivery in simulator.deliveries
                    if _id_key(delivery.call_id) == _id_key(call_id)
                    and any(
                        str((n.get("resourceData") or {}).get("state", "")).lower() == "incoming"
                        for n in delivery.notifications
                    )
                ),
                None,
            ),
            within=15,
            what="incoming-call notification",
        )
        report.answer_latency_seconds = answer.received_at - incoming
        step.detail += f", {report.answer_latency_seconds * 1000:.0f} ms after the notification"

    with progress.step("Bot asked for a recorded response") as step:
        record = wait_until(
            lambda: graph_request("recordResponse"), within=15, what="recordResponse request"
        )
        if record.status_code >= 300:
            raise AssertionError(f"Graph refused recordResponse with {record.status_code}")
        operation = wait_until(
            lambda: next(
                (
                    op
                    for op in simulator.operations
                    if op.call_id == call_id and op.kind == "record"
                ),
                None,
            ),
            within=5,
            what="record operation",
        )
        report.operation_id = operation.id
        seconds = (record.body or {}).get("maxRecordDurationInSeconds")
        step.detail = f"operation {operation.id}, at most {seconds} s of audio"
        notice = _prompt_name(record.body)
        if notice:
            # The recording notice the caller hears before the beep (the app serves it).
            step.detail += f", prompt {notice} first"

    with progress.step("Simulator recorded and notified") as step:

        def completion() -> tuple[Any, dict[str, Any]] | None:
            for delivery in simulator.deliveries:
                for notification in delivery.notifications:
                    data = notification.get("resourceData") or {}
                    if (
                        delivery.status_code is not None
                        and "recordoperation" in str(data.get("@odata.type", "")).lower()
                        and _id_key(str(data.get("id", ""))) == _id_key(report.operation_id)
                    ):
                        return delivery, data
            return None

        delivery, data = wait_until(completion, within=30, what="completion notification")
        info = data.get("resultInfo") or {}
        report.result = (
            f"{info.get('subcode')}: {info.get('message', '').rstrip('.')}"  # until stored
        )
        if delivery.status_code != 202:
            raise AssertionError(f"the webhook answered {delivery.status_code}, not 202")
        if data.get("status") != "completed":
            raise AssertionError(f"the recording {data.get('status')}: {report.result}")
        recording = simulator.recording_for(report.operation_id)
        if recording is None:
            raise AssertionError("the simulator has no recording for the operation")
        expected_sha256 = recording.sha256
        step.detail = (
            f"{data.get('status')}, {report.result}; {recording.size:,} bytes "
            f"({recording.duration_seconds:g} s); webhook 202"
        )

    with progress.step("Worker stored the recording") as step:

        def stored() -> dict[str, Any] | None:
            body = status_api.get(call_id, report.operation_id)
            if body and body["status"] == "failed":
                raise AssertionError(f"the download failed: {body.get('failureReason')}")
            return body if body and body["status"] in ("stored", "expired") else None

        body = wait_until(stored, within=30, what="stored recording")
        report.size_bytes = body.get("sizeBytes")
        report.result = str(body.get("resultMeaning") or report.result)
        report.sha256 = str(body.get("sha256", ""))
        stored_at = datetime.fromisoformat(str(body["storedAt"]))
        report.latency_seconds = stored_at.timestamp() - delivery.sent_at
        step.detail = (
            f"{report.size_bytes:,} bytes in recordings/{body.get('blobName')}, "
            f"{report.latency_seconds * 1000:.0f} ms after the notification"
        )
        traces = stack.local_host.recording_traces if stack.local_host else None
        if traces is not None:
            # Webhook, queue, download, commit and ledger write: one trace (local SDK only).
            report.trace_id = wait_until(
                lambda: traces.trace_id(report.operation_id), within=5, what="the trace id"
            )
            step.detail += f", trace {report.trace_id}"

    with progress.step("SHA-256 matches the simulator's recording") as step:
        report.sha256_matches = report.sha256 == expected_sha256
        if not report.sha256_matches:
            raise AssertionError(f"stored {report.sha256[:16]}…, simulator {expected_sha256[:16]}…")
        step.detail = report.sha256

    with progress.step("Status API hands out a read URL serving the same bytes") as step:
        body = status_api.get(call_id, report.operation_id) or {}
        report.status_answer = body
        url = body.get("recordingUrl")
        if body.get("status") != "stored" or not url:
            raise AssertionError(f"status {body.get('status')!r} without recordingUrl")
        digest = hashlib.sha256()
        with httpx.stream("GET", url, timeout=HTTP_TIMEOUT) as response:
            if response.status_code != 200:
                raise AssertionError(f"the read URL answered {response.status_code}")
            for chunk in response.iter_bytes():
                digest.update(chunk)
        if digest.hexdigest() != expected_sha256:
            raise AssertionError("the read URL served different bytes")
        step.detail = f"status stored, URL valid until {body.get('recordingUrlExpiresAt')}"

    if stack.settings.get("TRANSCRIPTION_ENABLED") == "true":
        with progress.step("Transcribed (the transcript lives and dies with the audio)") as step:
            body = wait_until(
                lambda: (
                    (b := status_api.get(call_id, report.operation_id)) and "transcript" in b and b
                ),
                within=20,
                what="the transcript in the status API",
            )
            report.transcript = str(body["transcript"])
            step.detail = f"“{report.transcript[:80]}”"

    with progress.step("Bot hung up, once the recording was stored") as step:
        wait_until(lambda: simulator.call(call_id).state == "terminated", within=15, what="hang-up")
        hang_up = next(
            (
                r
                for r in simulator.requests
                if r.method == "DELETE" and _id_key(call_id) in _id_key(r.path)
            ),
            None,
        )
        step.detail = "call terminated"
        if hang_up is not None:
            after = hang_up.received_at - stored_at.timestamp()
            if after < 0:
                raise AssertionError("the bot hung up before the recording was stored")
            step.detail += f", {after * 1000:.0f} ms after the recording was stored"

    _silence_then_answer(stack, progress, status_api, report)

    with progress.step("Cleanup expired the recording") as step:
        body = wait_until(
            lambda: (
                (b := status_api.get(call_id, report.operation_id))
                and b["status"] == "expired"
                and b
            ),
            within=45,
            what="expiry (retention 6 s, cleanup every 2 s)",
        )
        report.expired_at = str(body.get("expiredAt", ""))
        if "recordingUrl" in body:
            raise AssertionError("an expired recording still has a read URL")
        step.detail = (
            f"status expired at {report.expired_at} (retention ended {body.get('expiresAt')})"
        )

    with progress.step("Blob deleted") as step:
        from azure.storage.blob import BlobClient

        from shared.blob_layout import transcript_blob_name

        assert stack.azurite is not None
        blob_name = str(report.status_answer.get("blobName"))
        names = [blob_name, *([transcript_blob_name(blob_name)] if report.transcript else [])]
        for name in names:
            blob = BlobClient.from_connection_string(
                stack.azurite.connection_string, "recordings", name
            )
            with blob:
                if blob.exists(timeout=10):
                    raise AssertionError(f"recordings/{name} still exists")
        step.detail = " and ".join(f"recordings/{name}" for name in names) + " gone"

    with progress.step("A subscriber received the recording's events, in order") as step:
        from devtools.graphsim.eventgrid import event_lines

        def through_expired() -> list[dict[str, Any]] | None:
            items = simulator.eventgrid.received_events(call_id)
            steps = [(i["event"].get("data") or {}).get("step") for i in items]
            return items if "expired" in steps else None

        items = wait_until(through_expired, within=20, what="the expired event")
        items.sort(key=lambda item: str(item["event"].get("sequence")))
        report.events = event_lines(items)
        step.detail = (
            ", ".join(str((i["event"].get("data") or {}).get("step")) for i in items)
            + " (Event Grid delivery, CloudEvents 1.0)"
        )


def duration_text(answer: dict[str, Any]) -> str:
    """The stored WAV's length as the status API states it (from the recording's own header)."""
    seconds = answer.get("durationSeconds")
    if not isinstance(seconds, int | float):
        return "- (not a WAV the app could read)"
    return f"{seconds:.2f} s"


def caller_text(answer: dict[str, Any]) -> str:
    """Who called, as the status API shows it: the API has already applied ``CALLER_IDENTITY``
    (masked numbers, no names, or nothing at all), so the report prints what it was given."""
    caller = answer.get("caller") or {}
    privacy = (answer.get("call") or {}).get("callerPrivacy", "?")
    shown = caller.get("phone") or caller.get("id")
    if not shown:
        return f"{caller.get('kind', 'unknown')}, no id kept (CALLER_IDENTITY={privacy})"
    name = f" “{caller['displayName']}”" if caller.get("displayName") else ""
    return f"{caller.get('kind', 'unknown')} {shown}{name} (CALLER_IDENTITY={privacy})"


def print_report(progress: Progress, report: Report) -> None:
    say = progress.say
    say()
    say("Report")
    say(f"  call id              {report.call_id}")
    say(f"  operation id         {report.operation_id}")
    say(f"  result               {report.result}")
    say(f"  bytes                {report.size_bytes:,}" if report.size_bytes else "  bytes  -")
    say(f"  duration             {duration_text(report.status_answer)}")
    say(f"  who called           {caller_text(report.status_answer)}")
    say(
        f"  SHA-256              {report.sha256} "
        f"({'matches' if report.sha256_matches else 'DOES NOT MATCH'} the simulator's recording)"
    )
    if report.answer_latency_seconds is not None:
        say(f"  incoming→answered    {report.answer_latency_seconds * 1000:.0f} ms (Graph: 15 s)")
    if report.latency_seconds is not None:
        say(f"  notification→stored  {report.latency_seconds * 1000:.0f} ms")
    if report.trace_id:
        say(f"  trace id             {report.trace_id} (webhook → queue → download → ledger)")
    if report.reprompt:
        say(f"  silent caller        {report.reprompt}")
    if report.transcript:
        say(f"  transcript           “{report.transcript}”")
    say("  status API answer (GET /api/recordings/{callId}/{operationId}, Recordings.Read token):")
    for line in json.dumps(redacted(report.status_answer), indent=2).splitlines():
        say(f"    {line}")
    say(f"  expired              {report.expired_at} (blob deleted by the cleanup timer)")
    if report.events:
        say("  events the subscriber received (python -m devtools.graphsim events --call-id ...):")
        for line in report.events:
            say(f"    {line}")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.demo",
        description="One simulated Teams call through the whole app, on 127.0.0.1.",
    )
    parser.add_argument(
        "--host",
        choices=["auto", "func", "local"],
        default="auto",
        help="run the app under `func start` or the local Functions host (auto: func if installed)",
    )
    parser.add_argument(
        "--log-file", type=Path, help="where the app's log goes (default: a temporary file)"
    )
    parser.add_argument(
        "--transcribe",
        action="store_true",
        help="turn transcription on (the simulator stands in for Azure AI Speech) and show the "
        "transcript in the report",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    progress = Progress(sys.stdout)
    log_path = args.log_file or Path(tempfile.mkdtemp(prefix="demo-")) / "app.log"
    log_file = open(log_path, "ab")  # noqa: SIM115 - closed in finally, after the app stopped
    handler = logging.StreamHandler(open(log_path, "a", encoding="utf-8"))  # noqa: SIM115
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("azure", "httpx", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    stack = LocalStack(
        host=args.host,
        settings={**DEMO_SETTINGS, **(TRANSCRIBE_SETTINGS if args.transcribe else {})},
        time_scale=DEMO_TIME_SCALE,
        function_key=new_function_key(),
        log=log_file,
    )
    progress.say(
        f"Demo: one simulated Teams call through the app ({stack.host_kind} host), all on 127.0.0.1"
    )
    started = time.monotonic()
    exit_code = 1
    report: Report | None = None
    try:
        report = run_demo(stack, progress)
        exit_code = 0
    except StepFailed as failed:
        progress.say()
        progress.say(f"Demo FAILED at step “{failed.step}”: {failed.reason}")
    except KeyboardInterrupt:
        progress.say()
        progress.say("Interrupted; stopping everything.")
        exit_code = 130
    finally:
        try:
            with progress.step("Stopped Azurite, the simulator and the app") as step:
                stack.stop()
                step.detail = "nothing left running"
        except StepFailed:
            exit_code = exit_code or 1
        root.removeHandler(handler)
        handler.close()
        log_file.close()
        if sys.exc_info()[1] is not None:
            # An unexpected error is on its way up (its traceback follows): the log may say why.
            progress.say(f"The app's log: {log_path}")
    if exit_code == 0 and report is not None:
        print_report(progress, report)
        progress.say(
            f"\nAll {len(progress.steps)} steps passed in {time.monotonic() - started:.1f} s."
        )
    # Last line of every run, passed or not: the log outlives the demo (a temporary file).
    progress.say(f"The app's log: {log_path}")
    return exit_code
