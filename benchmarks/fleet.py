"""App instances as separate processes, and what each costs in CPU: shared by figures 7, 8 and 9.

Each instance is ``python -m benchmarks.instance`` (the real local Functions host with the real
``function_app``). The fleet starts them, waits until each serves HTTP, kills one on request
(SIGKILL: no drain, its queue messages stay invisible until their lease ends), stops the rest
gracefully, and samples the CPU time of every process that shares the machine's cores: the
instances, Azurite, the recordings server and this process, against the machine's own total.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import ROOT
from devtools.azurite import free_port

SCRATCH = ROOT / "benchmarks" / ".scratch" / "fleet"
# Once a year: the cleanup timer stays out of the measured runs.
NEVER = "0 0 0 1 1 *"


def host_json(function_timeout_seconds: int, path: Path) -> Path:
    """The repository's host.json with a shorter ``functionTimeout``.

    The local host keeps a message it runs invisible for ``functionTimeout`` + 30 s; a killed
    instance's messages come back after that, so a short timeout keeps the takeover measurable.
    Everything else (batchSize 16, newBatchThreshold 8, maxPollingInterval 2 s) is host.json's.
    """
    config = json.loads((ROOT / "host.json").read_text())
    minutes, seconds = divmod(function_timeout_seconds, 60)
    config["functionTimeout"] = f"00:{minutes:02d}:{seconds:02d}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    return path


def cpu_seconds(pid: int | None, *, with_children: bool = False) -> float:
    """User + system CPU time of a process (and its children: Azurite runs under a wrapper)."""
    import psutil

    if pid is None:
        return 0.0
    try:
        process = psutil.Process(pid)
        processes = [process, *(process.children(recursive=True) if with_children else [])]
        total = 0.0
        for each in processes:
            with contextlib.suppress(psutil.Error):
                times = each.cpu_times()
                total += times.user + times.system
        return total
    except psutil.Error:
        return 0.0


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent outside idle (everyone's: the machine is shared)."""
    import psutil

    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


@dataclass
class Instance:
    process: subprocess.Popen[bytes]
    port: int
    profile: Path | None = None
    killed: bool = False
    cpu_at_kill: float = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Fleet:
    """``count`` app instances with the same settings, against the same storage."""

    count: int
    env: Mapping[str, str]
    host_json: Path
    profile_first: Path | None = None
    startup_timeout: float = 90.0
    # Ports chosen ahead (an app that must know its own callback URL); else free ones.
    ports: list[int] | None = None
    instances: list[Instance] = field(default_factory=list)

    def start(self) -> Fleet:
        for index in range(self.count):
            port = self.ports[index] if self.ports else free_port()
            profile = self.profile_first if index == 0 else None
            command = [
                sys.executable,
                "-m",
                "benchmarks.instance",
                "--port",
                str(port),
                "--host-json",
                str(self.host_json),
            ]
            if profile is not None:
                command += ["--profile", str(profile)]
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=dict(self.env),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            self.instances.append(Instance(process, port, profile))
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=2.0, trust_env=False) as http:
            for instance in self.instances:
                while True:
                    if instance.process.poll() is not None:
                        self.stop()
                        raise RuntimeError(f"instance exited with {instance.process.returncode}")
                    with contextlib.suppress(httpx.HTTPError):
                        http.get(f"{instance.base_url}/api/health")
                        break
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError("an app instance did not start in time")
                    time.sleep(0.1)
        return self

    @property
    def live(self) -> list[Instance]:
        return [instance for instance in self.instances if not instance.killed]

    def kill(self, index: int) -> None:
        instance = self.instances[index]
        # Its CPU up to the kill still counts; a dead process reports none.
        instance.cpu_at_kill = cpu_seconds(instance.process.pid)
        instance.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(instance.process.pid, 9)
        instance.process.wait(timeout=10)

    def cpu_seconds(self) -> list[float]:
        return [
            instance.cpu_at_kill if instance.killed else cpu_seconds(instance.process.pid)
            for instance in self.instances
        ]

    def stop(self) -> None:
        for instance in self.instances:
            if instance.process.poll() is None:
                instance.process.terminate()
        for instance in self.instances:
            try:
                instance.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                instance.process.kill()
                instance.process.wait(timeout=5)

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class CpuSample:
    """CPU seconds of each party at one moment; two samples give the shares over a span."""

    at: float
    instances: list[float]
    azurite: float
    recordings_server: float
    driver: float
    machine: float

    @classmethod
    def take(cls, fleet: Fleet, *, azurite_pid: int | None, server_pid: int | None) -> CpuSample:
        return cls(
            at=time.perf_counter(),
            instances=fleet.cpu_seconds(),
            azurite=cpu_seconds(azurite_pid, with_children=True),
            recordings_server=cpu_seconds(server_pid),
            driver=time.process_time(),
            machine=machine_busy_seconds(),
        )


def cpu_shares(before: CpuSample, after: CpuSample) -> dict[str, Any]:
    """Each party's CPU over the span, in cores (1.0 = one core busy all the time)."""
    wall = max(after.at - before.at, 1e-9)
    instances = [b - a for a, b in zip(before.instances, after.instances, strict=True)]
    ours = sum(instances) + (after.azurite - before.azurite)
    ours += (after.recordings_server - before.recordings_server) + (after.driver - before.driver)
    machine = after.machine - before.machine
    return {
        "wall_s": wall,
        "instances_cpu_s": instances,
        "app_cores": sum(instances) / wall,
        "azurite_cores": (after.azurite - before.azurite) / wall,
        "recordings_server_cores": (after.recordings_server - before.recordings_server) / wall,
        "driver_cores": (after.driver - before.driver) / wall,
        "machine_cores": machine / wall,
        "others_cores": max(0.0, machine - ours) / wall,
    }


def azurite_pid(azurite: Any) -> int | None:
    # Azurite keeps its process private; the CPU share needs its pid, nothing else.
    process = getattr(azurite, "_process", None)
    return process.pid if process is not None else None


def saturated(shares: dict[str, Any], cores: int) -> str:
    """Which party used the most CPU, and whether the machine had any left."""
    parties = {
        "the app's instances": shares["app_cores"],
        "Azurite": shares["azurite_cores"],
        "the recordings server": shares["recordings_server_cores"],
        "the load driver": shares["driver_cores"],
        "other work on the machine": shares["others_cores"],
    }
    name, used = max(parties.items(), key=lambda item: item[1])
    busy = shares["machine_cores"] / cores
    verdict = "the CPU was saturated" if busy >= 0.9 else "the CPU had room"
    return f"{name} ({used:.2f} cores); machine {busy:.0%} busy on {cores} cores: {verdict}"


@contextlib.contextmanager
def scratch_dir(name: str) -> Iterator[Path]:
    path = SCRATCH / name
    path.mkdir(parents=True, exist_ok=True)
    yield path
