"""``make start``: the app against Azurite and the Graph simulator, for a developer to drive.

``python -m devtools.demo.start [--port 7071] [--simulator-port 7072] [--host auto|func|local]``

Everything listens on 127.0.0.1 until Ctrl+C. The simulator is on its CLI's default port, so
``python -m devtools.graphsim call`` reaches it without ``--sim``. Settings not pointing at the
local services come from ``local.settings.json`` (else the example), as under ``func start``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from devtools.demo.stack import InvalidAppSettings, LocalStack, StackError

DEFAULT_APP_PORT = 7071
DEFAULT_SIMULATOR_PORT = 7072  # the graphsim CLI's default --sim


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.demo.start",
        description="Run the app with Azurite and the Graph simulator on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_APP_PORT, help="app HTTP port")
    parser.add_argument("--simulator-port", type=int, default=DEFAULT_SIMULATOR_PORT)
    parser.add_argument("--host", choices=["auto", "func", "local"], default="auto")
    parser.add_argument(
        "--time-scale", type=float, default=0.1, help="simulator wall seconds per simulated second"
    )
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def instructions(stack: LocalStack) -> str:
    assert stack.simulator is not None
    assert stack.azurite is not None
    sim = stack.simulator.base_url
    sim_flag = "" if stack.simulator.port == DEFAULT_SIMULATOR_PORT else f" --sim {sim}"
    graphsim = f"{sys.executable} -m devtools.graphsim"
    return f"""
Ready; everything listens on 127.0.0.1 (Ctrl+C stops it all).
  app        {stack.app_url}/api  ({stack.host_kind} host; webhook {stack.app_url}/api/calls)
  simulator  {sim}
  Azurite    blob :{stack.azurite.blob_port}  queue :{stack.azurite.queue_port}  table :{stack.azurite.table_port}

Place a simulated Teams call (the bot answers, records, the worker stores the recording):
  {graphsim} call{sim_flag} --scenario max-duration
  scenarios: max-duration, stop-tone, initial-silence, hangup, prompt-failed;
  faults: --recording-fault 503 (repeatable), --duplicate-completion, --out-of-order
Watch it:
  {graphsim} inspect{sim_flag} deliveries --call-id <call id>
  {graphsim} inspect{sim_flag} requests --call-id <call id>
  {graphsim} hangup{sim_flag} <call id>
Ask the app with a token for its API carrying the role the route needs (docs/security.md):
  TOKEN=$({graphsim} token{sim_flag} --role Recordings.Read --role Recordings.Audit)
  curl -H "Authorization: Bearer $TOKEN" -H "x-functions-key: $KEY" "{stack.app_url}/api/recordings?callId=<call id>"
  curl -H "Authorization: Bearer $TOKEN" -H "x-functions-key: $KEY" {stack.app_url}/api/recordings/<call id>/<operation id>/audit
  ($KEY: LOCAL_FUNCTION_KEY or the one printed above; needed while MANAGEMENT_FUNCTION_KEYS=true,
  where the key alone also works and is audited as "function key")
"""


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    for noisy in ("azure", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    stack = LocalStack(
        host=args.host,
        app_port=args.port,
        simulator_port=args.simulator_port,
        time_scale=args.time_scale,
        load_local_settings=True,
    )
    try:
        stack.start()
    except InvalidAppSettings as error:
        # The app's own one line, as the app itself would report it; nothing else is wrong.
        print(error, file=sys.stderr)
        return 1
    except (StackError, OSError, RuntimeError) as error:
        print(f"Could not start: {error}", file=sys.stderr)
        print(
            "Ports in use? Try --port 0 --simulator-port 0. Azurite missing? Run `make install`.",
            file=sys.stderr,
        )
        return 1
    try:
        print(instructions(stack), file=sys.stderr, flush=True)
        while not stopping.wait(0.5):
            pass
    finally:
        print("Stopping the app, the simulator and Azurite…", file=sys.stderr, flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
