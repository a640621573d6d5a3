"""Command line: serve the simulator, place calls and read back what it sent and received.

python -m devtools.graphsim serve --port 7072 --bot-app-id ID --callback-url URL
python -m devtools.graphsim call --sim http://127.0.0.1:7072 --scenario max-duration
python -m devtools.graphsim inspect --sim http://127.0.0.1:7072 deliveries
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import httpx

from .models import SCENARIOS
from .server import DEFAULT_TENANT_ID, GraphSimulator

DEFAULT_SIM = "http://127.0.0.1:7072"
SECRET_KEYS = frozenset({"recordingAccessToken", "accessToken", "IDENTITY_HEADER"})


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
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sim.start()
    try:
        print(f"Graph simulator listening on {sim.base_url}", flush=True)
        env = sim.config()["env"]
        for name, value in (env if args.print_env else redact(env)).items():
            print(f"  {name}={value}", flush=True)
        if not args.print_env:
            print("  (IDENTITY_HEADER: use --print-env or GET /_sim/config)", flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


def _call(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "scenario": args.scenario,
        "duplicateEstablished": args.duplicate_established,
        "outOfOrder": args.out_of_order,
        "notificationDelaySeconds": args.notification_delay,
        "duplicateCompletion": args.duplicate_completion,
        "recordingFaults": args.recording_fault or [],
        "speechSeconds": args.speech_seconds,
    }
    if args.callback_url:
        body["callbackUrl"] = args.callback_url
    if args.hangup_after is not None:
        body["hangupAfterCompletionSeconds"] = args.hangup_after
    response = httpx.post(f"{args.sim}/_sim/calls", json=body, timeout=10)
    _print(response.json(), args.show_secrets)
    return 0 if response.status_code == 201 else 1


def _inspect(args: argparse.Namespace) -> int:
    paths = {
        "deliveries": "/_sim/deliveries",
        "requests": "/_sim/requests",
        "calls": "/_sim/calls",
        "recordings": "/_sim/recordings",
        "config": "/_sim/config",
    }
    path = f"/_sim/calls/{args.call_id}" if args.what == "call" else paths[args.what]
    if args.what == "call" and not args.call_id:
        print("inspect call needs --call-id", file=sys.stderr)
        return 2
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.graphsim", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the simulator on 127.0.0.1 until interrupted")
    serve.add_argument("--port", type=int, default=7072)
    serve.add_argument("--bot-app-id", required=True)
    serve.add_argument("--tenant-id", default=DEFAULT_TENANT_ID)
    serve.add_argument(
        "--callback-url", help="the bot's notification URL (default for placed calls)"
    )
    serve.add_argument(
        "--time-scale", type=float, default=0.1, help="wall seconds per simulated second"
    )
    serve.add_argument("--retention-seconds", type=float, default=30.0)
    serve.add_argument("--answer-timeout-seconds", type=float, default=15.0)
    serve.add_argument(
        "--https-only", action="store_true", help="refuse http:// callbackUri on answer"
    )
    serve.add_argument("--identity-header", help="fixed IDENTITY_HEADER value (default: random)")
    serve.add_argument("--print-env", action="store_true", help="print IDENTITY_HEADER too")
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
    call.add_argument("--callback-url")
    call.add_argument("--duplicate-established", action="store_true")
    call.add_argument("--out-of-order", action="store_true")
    call.add_argument("--duplicate-completion", action="store_true")
    call.add_argument("--notification-delay", type=float, default=0.0)
    call.add_argument(
        "--recording-fault", action="append", help="e.g. 503, 429:2, reset, short, slow:3"
    )
    call.add_argument("--speech-seconds", type=float, default=3.0)
    call.add_argument(
        "--hangup-after", type=float, help="caller hangs up N simulated s after completion"
    )
    call.set_defaults(func=_call)

    inspect = client("inspect", "print what the simulator sent and received")
    inspect.add_argument(
        "what",
        nargs="?",
        default="deliveries",
        choices=["deliveries", "requests", "calls", "call", "recordings", "config"],
    )
    inspect.add_argument("--call-id")
    inspect.set_defaults(func=_inspect)

    hangup = client("hangup", "the caller hangs up")
    hangup.add_argument("call_id")
    hangup.set_defaults(func=_hangup)

    add = client("add-recording", "create a recording without a call")
    add.add_argument("--size-bytes", type=int)
    add.add_argument("--duration-seconds", type=float)
    add.add_argument("--fault", action="append")
    add.set_defaults(func=_add_recording)

    rotate = client("rotate-key", "rotate the notification signing key")
    rotate.add_argument("--drop-old", action="store_true", help="stop publishing the old key")
    rotate.set_defaults(func=_rotate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except httpx.HTTPError as exc:
        print(f"cannot reach the simulator: {exc}", file=sys.stderr)
        return 1
