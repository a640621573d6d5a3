"""``python -m benchmarks.instance``: one app instance, as Flex Consumption scales one out.

The capacity figures (7, 8) run several of these against one Azurite: each is its own process
running the real local Functions host (``devtools.localhost``) with the real ``function_app``,
its HTTP webhook and its queue trigger polling the shared queue, so instances share nothing but
storage, as in Azure. The host runs on this process's main thread so that ``--profile`` (cProfile
of the event loop's thread) sees the app's own work; SIGTERM stops it gracefully, SIGKILL is how
a figure kills an instance mid-burst. Settings come from the environment the parent passes.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import timedelta
from pathlib import Path

from benchmarks.harness import ROOT

# The function key of the routes that need one; the webhook itself is anonymous.
FUNCTION_KEY = "bench-instance-key"


async def serve(port: int, host_json: Path) -> None:
    from devtools.localhost import LocalFunctionsHost

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    host = LocalFunctionsHost(
        port=port,
        keys=[FUNCTION_KEY],
        app_root=ROOT,
        host_json=host_json,
        load_local_settings=False,
        drain_timeout=timedelta(seconds=5),
        startup_timeout=60.0,
    )
    async with host:
        print(f"ready {host.base_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instance")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host-json", type=Path, required=True)
    parser.add_argument("--profile", type=Path, default=None, help="write cProfile stats here")
    args = parser.parse_args(argv)
    import logging

    # One line per outcome at INFO would time the terminal; the figures read storage instead.
    logging.basicConfig(level=logging.WARNING)
    if args.profile is None:
        asyncio.run(serve(args.port, args.host_json))
        return 0
    import cProfile
    import time

    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    try:
        asyncio.run(serve(args.port, args.host_json))
    finally:
        profiler.disable()
        profiler.dump_stats(str(args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
