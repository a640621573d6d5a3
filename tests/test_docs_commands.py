"""Every command the README and docs/ give, that can run offline and quickly, runs as written.

What is checked, without starting anything long-lived or reaching the network:
- each ``make X`` names a target the Makefile has (``make -n X``);
- each ``python -m module`` exists: ``--help`` (of its subcommand too) exits 0, and every
  ``--option`` the command uses is one that help lists;
- every repository path the docs name (code spans and links) exists;
- ``make sim`` starts a simulator that matches local.settings.example.json;
- test.http has a request for every HTTP route the app registers, and .vscode's tasks hang
  together.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
MAKE = shutil.which("make") or "make"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1\s*$", re.M | re.S)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
SHELL_SEPARATORS = {"&&", "||", ";", "|"}
# Files a user makes or a tool writes; the docs name them, a fresh clone does not have them.
MADE_LOCALLY = {
    "local.settings.json",
    ".venv",
    ".venv/bin/python",
    ".venv-checkov",
    "node_modules",
    "node_modules/.bin/azurite",
    "benchmarks/.scratch",
    "benchmarks/.scratch/results",
    "dist/teams-app.zip",  # written by make teams-app
    "manifest.json",  # inside dist/teams-app.zip
    ".python_packages",
    ".azurite",
}
PATH_SUFFIXES = (".py", ".md", ".json", ".txt", ".toml", ".yaml", ".yml", ".bicep", ".http")


@dataclass(frozen=True)
class Command:
    doc: str
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.doc}: {shlex.join(self.argv)}"


def _text(doc: Path) -> str:
    return doc.read_text(encoding="utf-8")


def _fenced_lines(text: str) -> Iterator[str]:
    for block in FENCE.finditer(text):
        logical = ""
        for line in block.group(2).splitlines():
            if line.rstrip().endswith("\\"):
                logical += line.rstrip()[:-1] + " "
                continue
            yield logical + line
            logical = ""


def _inline_spans(text: str) -> Iterator[str]:
    yield from INLINE_CODE.findall(FENCE.sub("", text))


def _commands_in(line: str) -> Iterator[tuple[str, ...]]:
    """Shell commands on one documented line, comments dropped, split at && ; || |."""
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote: prose, not a command
        return
    current: list[str] = []
    for token in [*tokens, ";"]:
        if token in SHELL_SEPARATORS or token == "&":
            if current:
                yield tuple(current)
            current = []
        else:
            current.append(token)


def _jsonc(path: Path) -> Any:
    """VS Code's JSON with comments (ours are whole-line ``//`` comments)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return json.loads("\n".join(line for line in lines if not line.strip().startswith("//")))


def _vscode_tasks() -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = _jsonc(ROOT / ".vscode" / "tasks.json")["tasks"]
    return tasks


@cache
def documented_commands() -> tuple[Command, ...]:
    """Commands of the docs' code blocks and code spans, and of .vscode/tasks.json's shell tasks."""
    found: list[Command] = []
    sources = [(doc.name, [*_fenced_lines(_text(doc)), *_inline_spans(_text(doc))]) for doc in DOCS]
    shell_tasks = [t["command"] for t in _vscode_tasks() if t.get("type") == "shell"]
    sources.append((".vscode/tasks.json", shell_tasks))
    for name, lines in sources:
        for line in lines:
            for argv in _commands_in(line):
                found.append(Command(name, argv))
    return tuple(dict.fromkeys(found))


def _make_targets() -> dict[str, str]:
    """Targets named by ``make ...`` commands, each with one place that names it."""
    targets: dict[str, str] = {}
    for command in documented_commands():
        if command.argv[0] != "make":
            continue
        for word in command.argv[1:]:
            if not word.startswith("-") and "=" not in word:
                targets.setdefault(word, str(command))
    return targets


def _python_module_commands() -> list[tuple[Command, str, list[str]]]:
    """(command, module, arguments) for every ``python -m module ...`` the docs give."""
    found = []
    for command in documented_commands():
        program = Path(command.argv[0]).name
        if not re.fullmatch(r"python(3(\.\d+)?)?", program) or len(command.argv) < 3:
            continue
        if command.argv[1] != "-m":
            continue
        found.append((command, command.argv[2], list(command.argv[3:])))
    return found


def _is_project_module(module: str) -> bool:
    top = module.split(".")[0]
    return (ROOT / top).is_dir() and (ROOT / top / "__init__.py").exists()


@cache
def _help(module: str, subcommand: str | None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", module, *([subcommand] if subcommand else []), "--help"]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)


def _subcommands(help_text: str) -> set[str]:
    """The choices of a subcommand positional, as argparse prints them: {serve,call,...}."""
    usage = help_text.split("\n\n")[0]
    choices = re.findall(r"\{([\w,-]+)\}", usage)
    return set(choices[-1].split(",")) if choices else set()


def test_the_docs_give_commands_to_check() -> None:
    # Guards the extraction itself: if the parsing broke, every other test would pass vacuously.
    targets = _make_targets()
    assert {"demo", "test", "start", "bench", "sim", "azurite", "lock"} <= set(targets)
    modules = {module for _, module, _ in _python_module_commands()}
    assert {
        "devtools.graphsim",
        "devtools.localhost",
        "benchmarks",
        "devtools.provision",
    } <= modules
    assert _exists("README.md", ROOT / "docs" / "demo.md")
    assert not _exists("docs/no-such-page.md", ROOT / "README.md")
    assert not _exists("modules/no-such-module.bicep", ROOT / "docs" / "infrastructure.md")


def test_every_documented_make_target_exists() -> None:
    missing = {}
    for target, where in sorted(_make_targets().items()):
        result = subprocess.run(
            [MAKE, "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=30
        )
        if result.returncode != 0:
            missing[target] = f"{where}: {result.stderr.strip()}"
    assert missing == {}


def test_every_documented_python_module_runs_its_help_and_knows_its_options() -> None:
    commands = _python_module_commands()
    project = [(c, m, a) for c, m, a in commands if _is_project_module(m)]
    # Help of each module, then of each subcommand used, in parallel (each is a fresh interpreter).
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda m: _help(m, None), sorted({m for _, m, _ in project})))
        wanted = set()
        for _, module, args in project:
            if args and args[0] in _subcommands(_help(module, None).stdout):
                wanted.add((module, args[0]))
        list(pool.map(lambda pair: _help(*pair), sorted(wanted)))

    problems = []
    for command, module, args in commands:
        if not _is_project_module(module):
            if subprocess.run(
                [
                    sys.executable,
                    "-c",
                    f"import importlib.util as u; assert u.find_spec({module!r})",
                ],
                capture_output=True,
                timeout=30,
            ).returncode:
                problems.append(f"{command}: no module {module}")
            continue
        top = _help(module, None)
        if top.returncode != 0:
            problems.append(f"{command}: --help exits {top.returncode}: {top.stderr[-300:]}")
            continue
        subcommand = args[0] if args and args[0] in _subcommands(top.stdout) else None
        result = _help(module, subcommand) if subcommand else top
        if result.returncode != 0:
            problems.append(f"{command}: {subcommand} --help exits {result.returncode}")
            continue
        for arg in args:
            option = arg.strip("[]").split("=")[0]
            if option.startswith("--") and option not in result.stdout:
                problems.append(
                    f"{command}: {option} is not an option of {module} {subcommand or ''}"
                )
    assert problems == []


# Code spans that look like paths but name something else.
MIME_TYPES = re.compile(r"^(application|audio|text|image|video|multipart)/[\w.+-]+$")
NOT_REPOSITORY_PATHS = {"recordings/"}  # the blob container


@cache
def _repository_files() -> tuple[str, ...]:
    """Every file and folder of the work tree, as paths relative to it (no venvs, no caches)."""
    skip = {".git", ".venv", ".venv-checkov", "node_modules", "__pycache__", ".scratch"}
    found = []
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT)
        if not skip.intersection(relative.parts):
            found.append(relative.as_posix() + ("/" if path.is_dir() else ""))
    return tuple(found)


def _exists(written: str, doc: Path) -> bool:
    """At the root, beside the doc, or below a folder the doc is about (``modules/x.bicep``)."""
    if (ROOT / written).exists() or (doc.parent / written).exists():
        return True
    suffix = "/" + written.rstrip("/")
    return any(f.rstrip("/").endswith(suffix) for f in _repository_files())


def _candidate_paths(doc: Path) -> Iterator[str]:
    text = _text(doc)
    for target in LINK.findall(text):
        if urlsplit(target).scheme or target.startswith("#"):
            continue
        yield target.split("#")[0]
    for span in _inline_spans(text):
        if re.search(r"[\s{}<>*=$:,()…|\"]", span) or span.startswith(("-", "/", "~", "@")):
            continue
        if "/" not in span and not span.endswith(PATH_SUFFIXES):
            continue
        if MIME_TYPES.match(span) or span.startswith("Microsoft.") or span in NOT_REPOSITORY_PATHS:
            continue
        if span.rstrip("/") in MADE_LOCALLY or span.startswith("benchmarks/.scratch"):
            continue
        yield span


def test_every_path_the_docs_name_exists() -> None:
    missing = [
        f"{doc.relative_to(ROOT)}: {written}"
        for doc in DOCS
        for written in _candidate_paths(doc)
        if not _exists(written, doc)
    ]
    assert missing == []


def _example_settings() -> dict[str, str]:
    values: dict[str, str] = json.loads((ROOT / "local.settings.example.json").read_text())[
        "Values"
    ]
    return values


def _make_sim_argv() -> list[str]:
    """The simulator command ``make sim`` runs, for this interpreter."""
    dry_run = subprocess.run(
        [MAKE, "-n", "sim"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
    )
    lines = [line for line in dry_run.stdout.splitlines() if "devtools.graphsim serve" in line]
    assert len(lines) == 1, dry_run.stdout
    argv = shlex.split(lines[0])
    if argv[0] == "exec":
        argv = argv[1:]
    assert argv[1:4] == ["-m", "devtools.graphsim", "serve"], argv
    return [sys.executable, *argv[1:]]


def _with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.hostname}:{port}").geturl()


def test_make_sim_serves_what_the_example_settings_expect() -> None:
    from devtools.graphsim.cli import build_parser

    argv = _make_sim_argv()
    options = build_parser().parse_args(argv[3:])
    example = _example_settings()
    assert options.callback_url == example["CALLBACK_BASE_URL"] + "/api/calls"

    # Run it as `make sim` would, on a free port instead of its own, and ask what it serves.
    process = subprocess.Popen(
        [*argv, "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", first_line)
        assert match, first_line
        config = httpx.get(f"{match.group(0)}/_sim/config", timeout=10).json()
    finally:
        process.terminate()
        process.wait(timeout=30)

    served = {
        name: _with_port(value, options.port) if value.startswith("http://") else value
        for name, value in config["env"].items()
    }
    assert served == {name: example[name] for name in served}
    assert {"GRAPH_BASE_URL", "BOT_APP_ID", "IDENTITY_HEADER", "IDENTITY_ENDPOINT"} <= set(served)


def _route_pattern(route: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", route)
    body = "".join("[^/?]+" if part.startswith("{") else re.escape(part) for part in parts)
    return re.compile(body)


def test_test_http_has_a_request_for_every_route_the_app_registers() -> None:
    from azure.functions.decorators.http import HttpTrigger

    from tests.support.functions import registered_functions

    host = json.loads((ROOT / "host.json").read_text())
    route_prefix = host.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    requests = re.findall(
        r"^(GET|POST|PUT|PATCH|DELETE) \{\{host\}\}/([^?\s]*)",
        (ROOT / "test.http").read_text(),
        re.M,
    )
    # The variables ({{callId}}) stand for one path segment each.
    requests = [(method, re.sub(r"\{\{\w+\}\}", "x", path)) for method, path in requests]
    routes = [
        (method.value, f"{route_prefix}/{trigger.route}")
        for function in registered_functions().values()
        if isinstance(trigger := function.get_trigger(), HttpTrigger)
        for method in trigger.methods or []
    ]
    assert len(routes) >= 5
    uncovered = [
        f"{method} /{route}"
        for method, route in routes
        if not any(m == method and _route_pattern(route).fullmatch(path) for m, path in requests)
    ]
    assert uncovered == []


def test_vscode_tasks_launch_and_extensions_hang_together() -> None:
    tasks = _vscode_tasks()
    labels = {task["label"] for task in tasks}
    launch = _jsonc(ROOT / ".vscode" / "launch.json")["configurations"]
    attach = next(c for c in launch if c["request"] == "attach")
    # The Azure Functions extension's Python debug port (languageWorkers__python__arguments).
    assert attach["connect"]["port"] == 9091
    assert attach["preLaunchTask"] in labels
    for task in tasks:
        depends = task.get("dependsOn", [])
        assert set([depends] if isinstance(depends, str) else depends) <= labels, task["label"]
    host = next(task for task in tasks if task["label"] == attach["preLaunchTask"])
    assert (host["type"], host["command"]) == ("func", "host start")
    recommended = set(_jsonc(ROOT / ".vscode" / "extensions.json")["recommendations"])
    assert {
        "ms-azuretools.vscode-azurefunctions",
        "ms-python.python",
        "ms-azuretools.vscode-bicep",
        "Azurite.azurite",
    } <= recommended
