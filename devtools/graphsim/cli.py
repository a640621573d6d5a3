"""Command line: serve the simulator, place calls and read back what it sent and received.

python -m devtools.graphsim serve          (defaults match local.settings.example.json)
python -m devtools.graphsim call --scenario max-duration --wait
python -m devtools.graphsim inspect        (one line per notification delivery)
"""

from __future__ import annotations

import argparse
import errno
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx

from .calls import check_keys
from .eventgrid import list_received
from .keys import GRAPH_TOKEN_ROLES
from .models import CALLERS, SCENARIOS
from .recordings import KNOWN_FAULTS
from .server import DEFAULT_TENANT_ID, GraphSimulator
from .throttling import ThrottleLimit

DEFAULT_SIM = "http://127.0.0.1:7072"
# The values local.settings.example.json points the app at (tests/graphsim/test_cli.py holds
# them to that file): `serve` with no flags is the simulator those settings expect.
DEFAULT_PORT = 7072
DEFAULT_TLS_PORT = 7073  # the federated path's documented port (serve --tls-port 7073)
DEFAULT_BOT_APP_ID = "00000000-0000-0000-0000-00000000b07a"
DEFAULT_IDENTITY_HEADER = "local-graph-simulator"
DEFAULT_CALLBACK_URL = "http://127.0.0.1:7071/api/calls"
SECRET_KEYS = frozenset({"recordingAccessToken", "accessToken", "IDENTITY_HEADER"})
RECORD_TYPE = "#microsoft.graph.recordOperation"


def redact(value: Any) -> Any:
    """Hide tokens in printed output unless --show-secrets."""
    if isinstance(value, dict):
        return {k: ("***" if k in SECRET_KEYS and v else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _print(data: Any, show_secrets: bool) -> None:
    print(json.dumps(data if show_secrets else redact(data), indent=2))


def _serve(args: argparse.Namespace) -> int:
    sim = GraphSimulator(
        args.bot_app_id,
        args.tenant_id,
        allow_insecure_callbacks=not args.https_only,
        recording_retention_seconds=args.retention_seconds,
        time_scale=args.time_scale,
        port=args.port,
        callback_url=args.callback_url,
        answer_timeout_seconds=args.answer_timeout_seconds,
        identity_header=args.identity_header,
        notification_retries=args.notification_retries,
        tls_port=args.tls_port,
        require_bot_app_token=args.require_bot_app_token,
        tls_dir=args.tls_dir,
        graph_token_roles=tuple(r.strip() for r in args.graph_token_roles.split(",") if r.strip()),
    )
    if args.throttle_requests is not None:
        limit = ThrottleLimit(args.throttle_requests, args.throttle_window_seconds)
        sim.calls_throttle.configure(limit)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        sim.start()
    except OSError as exc:
        ports = f"{args.port}" if args.tls_port is None else f"{args.port} or {args.tls_port}"
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        print(
            f"graphsim: cannot listen on 127.0.0.1:{ports}: {reason}. Is a simulator already "
            "running? Stop it, or pick another port (--port, --tls-port; 0 = any free port).",
            file=sys.stderr,
        )
        return 1
    try:
        print(f"Graph simulator listening on {sim.base_url}", flush=True)
        env = sim.config()["env"]
        for name, value in (env if args.print_env else redact(env)).items():
            print(f"  {name}={value}", flush=True)
        if not args.print_env:
            print("  (IDENTITY_HEADER: use --print-env or GET /_sim/config)", flush=True)
        if sim.authority_host:
            print(f"Entra token endpoint: {sim.token_endpoint()}", flush=True)
            print(f"  AZURE_AUTHORITY_HOST={sim.authority_host}", flush=True)
            print(f"  CA file (trust it for TLS): {sim.tls_ca_file}", flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


def _record_outcomes(call: dict[str, Any]) -> list[dict[str, Any]]:
    return [op for op in call.get("operations", []) if op.get("@odata.type") == RECORD_TYPE]


def _outcome_line(operation: dict[str, Any]) -> str:
    result = operation.get("resultInfo") or {}
    line = (
        f"recording {operation['id']}: {operation['status']} "
        f"{result.get('code')}/{result.get('subcode')} {result.get('message', '')}".rstrip()
    )
    if operation.get("recordingLocation"):
        line += f" at {operation['recordingLocation']}"
    return line


def _wait_for_recording(sim: str, call_id: str, within: float) -> int:
    """Print each recording's final status; 0 once one is completed, 1 if none is."""
    deadline = time.monotonic() + within
    reported: set[str] = set()
    while True:
        call = httpx.get(f"{sim}/_sim/calls/{call_id}", timeout=10).json()
        for operation in _record_outcomes(call):
            if operation["status"] in ("completed", "failed") and operation["id"] not in reported:
                reported.add(operation["id"])
                print(_outcome_line(operation), flush=True)
                if operation["status"] == "completed":
                    return 0
        if call.get("state") == "terminated":
            if not reported:
                print(f"call {call_id} ended without a recording", flush=True)
            return 1
        if time.monotonic() >= deadline:
            print(f"no final recording status within {within:g} s", flush=True)
            return 1
        time.sleep(0.2)


def _call(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "scenario": args.scenario,
        "caller": args.caller,
        "duplicateEstablished": args.duplicate_established,
        "outOfOrder": args.out_of_order,
        "notificationDelaySeconds": args.notification_delay,
        "duplicateCompletion": args.duplicate_completion,
        "recordingFaults": args.recording_fault or [],
        "speechSeconds": args.speech_seconds,
        "keysAfterPrompts": args.keys_after_prompt or [],
    }
    if args.callback_url:
        body["callbackUrl"] = args.callback_url
    if args.hangup_after is not None:
        body["hangupAfterCompletionSeconds"] = args.hangup_after
    response = httpx.post(f"{args.sim}/_sim/calls", json=body, timeout=10)
    if response.status_code != 201:
        _print(response.json(), args.show_secrets)
        return 1
    placed = response.json()
    if not args.wait:
        _print(placed, args.show_secrets)
        return 0
    print(f"call {placed['id']} placed ({args.scenario}); waiting for its recording", flush=True)
    return _wait_for_recording(args.sim, placed["id"], args.timeout)


def _inspect(args: argparse.Namespace) -> int:
    if args.what is None:
        # The default view: one line per delivery, the whole journal at a glance.
        response = httpx.get(f"{args.sim}/_sim/deliveries", timeout=10)
        deliveries = response.json()
        key = (args.call_id or "").replace("-", "").lower()
        for delivery in deliveries:
            if key and delivery["call_id"].replace("-", "").lower() != key:
                continue
            print(delivery.get("summary") or json.dumps(redact(delivery)))
        if not deliveries:
            print("no notifications sent yet")
        return 0 if response.status_code == 200 else 1
    paths = {
        "deliveries": "/_sim/deliveries",
        "requests": "/_sim/requests",
        "calls": "/_sim/calls",
        "recordings": "/_sim/recordings",
        "config": "/_sim/config",
    }
    if args.what == "call" and not args.call_id:
        print("inspect call needs --call-id", file=sys.stderr)
        return 2
    path = f"/_sim/calls/{args.call_id}" if args.what == "call" else paths[args.what]
    response = httpx.get(f"{args.sim}{path}", timeout=10)
    data = response.json()
    if args.call_id and args.what in ("deliveries", "requests"):
        key = args.call_id.replace("-", "").lower()
        data = [d for d in data if key in json.dumps(d).replace("-", "").lower()]
    _print(data, args.show_secrets)
    return 0 if response.status_code == 200 else 1


def _hangup(args: argparse.Namespace) -> int:
    response = httpx.post(f"{args.sim}/_sim/calls/{args.call_id}/hangup", timeout=10)
    _print(response.json(), args.show_secrets)
    return 0 if response.status_code == 200 else 1


def _keys(args: argparse.Namespace) -> int:
    response = httpx.post(
        f"{args.sim}/_sim/calls/{args.call_id}/keys", json={"keys": args.keys}, timeout=10
    )
    _print(response.json(), args.show_secrets)
    return 0 if response.status_code == 200 else 1


def _add_recording(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"faults": args.fault or []}
    if args.size_bytes is not None:
        body["sizeBytes"] = args.size_bytes
    if args.duration_seconds is not None:
        body["durationSeconds"] = args.duration_seconds
    response = httpx.post(f"{args.sim}/_sim/recordings", json=body, timeout=60)
    _print(response.json(), args.show_secrets)
    return 0 if response.status_code == 201 else 1


def _rotate(args: argparse.Namespace) -> int:
    response = httpx.post(
        f"{args.sim}/_sim/keys/rotate", json={"keepOld": not args.drop_old}, timeout=10
    )
    _print(response.json(), args.show_secrets)
    return 0 if response.status_code == 200 else 1


def _token(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"roles": args.role or []}
    for name, value in (
        ("objectId", args.object_id),
        ("appId", args.app_id),
        ("tenantId", args.tenant_id),
        ("audience", args.audience),
        ("version", args.version),
        ("lifetimeSeconds", args.lifetime_seconds),
    ):
        if value is not None:
            body[name] = value
    response = httpx.post(f"{args.sim}/_sim/entra/token", json=body, timeout=10)
    if response.status_code != 200:
        print(response.text, file=sys.stderr)
        return 1
    # The bare token on stdout, for TOKEN=$(python -m devtools.graphsim token ...).
    print(response.json()["access_token"])
    return 0


def _keys_argument(value: str) -> str:
    try:
        check_keys(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.graphsim",
        description="Local Microsoft Graph calling simulator (see docs/simulator.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the simulator on 127.0.0.1 until interrupted",
        description="Defaults match local.settings.example.json: no flags needed.",
    )
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="default %(default)s")
    serve.add_argument(
        "--tls-port",
        type=int,
        help="also listen with https here, for the Entra-style token endpoint of the federated "
        f"path (e.g. {DEFAULT_TLS_PORT}; 0 = any free port; default: no https listener)",
    )
    serve.add_argument(
        "--tls-dir",
        help="folder for ca.pem and the server certificate (default: a temporary folder); "
        "a fixed one keeps the CA file's path stable for SSL_CERT_FILE",
    )
    serve.add_argument("--bot-app-id", default=DEFAULT_BOT_APP_ID, help="default %(default)s")
    serve.add_argument("--tenant-id", default=DEFAULT_TENANT_ID, help="default %(default)s")
    serve.add_argument(
        "--callback-url",
        default=DEFAULT_CALLBACK_URL,
        help="the bot's notification URL for placed calls (default %(default)s)",
    )
    serve.add_argument(
        "--time-scale", type=float, default=0.1, help="wall seconds per simulated second"
    )
    serve.add_argument("--retention-seconds", type=float, default=30.0)
    serve.add_argument("--answer-timeout-seconds", type=float, default=15.0)
    serve.add_argument(
        "--notification-retries",
        type=int,
        default=3,
        help="tries after a failed delivery (5xx, 408, 429, no answer)",
    )
    serve.add_argument(
        "--https-only", action="store_true", help="refuse http:// callbackUri on answer"
    )
    serve.add_argument(
        "--identity-header",
        default=DEFAULT_IDENTITY_HEADER,
        help="IDENTITY_HEADER the managed-identity endpoint expects (default %(default)s)",
    )
    serve.add_argument(
        "--require-bot-app-token",
        action="store_true",
        help="calls API takes only tokens whose appid is the bot's (the federated path)",
    )
    serve.add_argument(
        "--graph-token-roles",
        default=",".join(GRAPH_TOKEN_ROLES),
        help="comma-separated app roles in the app's Graph tokens; leave out "
        "Calls.AccessMedia.All to see /api/health report it not granted (default %(default)s)",
    )
    serve.add_argument("--print-env", action="store_true", help="print IDENTITY_HEADER too")
    serve.add_argument(
        "--throttle-requests",
        type=int,
        default=None,
        help="calls-API requests admitted per window, per app and tenant (default: no limit)",
    )
    serve.add_argument("--throttle-window-seconds", type=float, default=1.0)
    serve.set_defaults(func=_serve)

    def client(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--sim", default=DEFAULT_SIM, help=f"simulator base URL (default {DEFAULT_SIM})"
        )
        p.add_argument("--show-secrets", action="store_true", help="do not redact tokens")
        return p

    call = client("call", "place an incoming call")
    call.add_argument("--scenario", choices=SCENARIOS, default="max-duration")
    call.add_argument(
        "--caller", choices=CALLERS, default="teams-user", help="who calls (default teams-user)"
    )
    call.add_argument("--callback-url")
    call.add_argument("--duplicate-established", action="store_true")
    call.add_argument("--out-of-order", action="store_true")
    call.add_argument("--duplicate-completion", action="store_true")
    call.add_argument("--notification-delay", type=float, default=0.0)
    call.add_argument(
        "--recording-fault",
        action="append",
        help=f"e.g. 503, 429:2, reset, short, slow:3, chunked (known: {', '.join(KNOWN_FAULTS)})",
    )
    call.add_argument("--speech-seconds", type=float, default=3.0)
    call.add_argument(
        "--hangup-after", type=float, help="caller hangs up N simulated s after completion"
    )
    call.add_argument(
        "--keys-after-prompt",
        action="append",
        type=_keys_argument,
        help="keys the caller presses after the next playPrompt (repeat: one per prompt)",
    )
    call.add_argument(
        "--wait", action="store_true", help="wait for the recording's final status and print it"
    )
    call.add_argument(
        "--timeout", type=float, default=60.0, help="seconds --wait waits (default %(default)s)"
    )
    call.set_defaults(func=_call)

    inspect = client("inspect", "what the simulator sent and received (default: one line each)")
    inspect.add_argument(
        "what",
        nargs="?",
        default=None,
        choices=["deliveries", "requests", "calls", "call", "recordings", "config"],
        help="print that in full (JSON) instead of the one-line delivery summary",
    )
    inspect.add_argument("--call-id")
    inspect.set_defaults(func=_inspect)

    hangup = client("hangup", "the caller hangs up")
    hangup.add_argument("call_id")
    hangup.set_defaults(func=_hangup)

    keys = client("keys", "the caller presses keys (DTMF 0-9, *, #, A-D)")
    keys.add_argument("call_id")
    keys.add_argument("keys", type=_keys_argument)
    keys.set_defaults(func=_keys)

    add = client("add-recording", "create a recording without a call")
    add.add_argument("--size-bytes", type=int)
    add.add_argument("--duration-seconds", type=float)
    add.add_argument("--fault", action="append")
    add.set_defaults(func=_add_recording)

    rotate = client("rotate-key", "rotate the notification signing key")
    rotate.add_argument("--drop-old", action="store_true", help="stop publishing the old key")
    rotate.set_defaults(func=_rotate)

    token = client(
        "token",
        "print an Entra access token for the bot's API (management routes) with chosen roles",
    )
    token.add_argument(
        "--role",
        action="append",
        help="an app role: Recordings.Read, Recordings.Record, Recordings.Erase, "
        "Recordings.Audit (repeat for several; none = a token without roles)",
    )
    token.add_argument("--object-id", help="the caller's object id (oid)")
    token.add_argument("--app-id", help="the caller's client id (azp/appid)")
    token.add_argument("--tenant-id", help="the token's tenant (default: the simulator's)")
    token.add_argument("--audience", help="default: the bot's app id (v2), api://<id> (v1)")
    token.add_argument("--version", choices=["1.0", "2.0"], help="token version (default 2.0)")
    token.add_argument("--lifetime-seconds", type=int)
    token.set_defaults(func=_token)

    events = client("events", "the lifecycle events the simulated subscriber received, in order")
    events.add_argument("--call-id")
    events.add_argument("--json", action="store_true", help="the CloudEvents in full")
    events.set_defaults(func=lambda args: list_received(args.sim, args.call_id, as_json=args.json))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except httpx.HTTPError as exc:
        print(f"cannot reach the simulator: {exc}", file=sys.stderr)
        return 1
