"""Pin the Function App's whole dependency tree in requirements.txt, at the tested versions.

    python -m devtools.lock_requirements          # rewrite requirements.txt (``make lock``)
    python -m devtools.lock_requirements --check  # exit 1 and show the difference if stale

Azure builds the deployment with ``pip install -r requirements.txt`` (Oryx, remote build on Flex
Consumption), and ``.funcignore`` keeps ``constraints.txt`` out of the package. So the deployed
tree is the tested one only if requirements.txt itself pins every package the app's direct
dependencies pull in, at the version constraints.txt (the tested set, a ``pip freeze``) names.

requirements.txt has two parts. Above the marker line: the direct dependencies, edited by hand,
each pinned with ``==`` to its constraints.txt version. Below it: everything they pull in, written
by this script from the installed packages' metadata (which must match constraints.txt) for every
Python version pyproject.toml supports, on Linux (what Azure runs).

A package that needs another version on another Python (``azure-functions`` 2.x requires 3.13,
1.x refuses it) is pinned twice, in both files, with environment markers: ``name==1.0;
python_version < "3.13"`` and ``name==2.0; python_version >= "3.13"``. The lock follows the pin
that applies to the Python it runs on (the installed one); the other pin's dependencies are
followed when the lock runs on its Python (``make test PYTHON=python3.13``), and both runs must
write the same file.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tomllib
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.markers import Marker, default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
MARKER = "# --- pulled in by the packages above: written by `make lock`, do not edit below ---"
# Minor versions considered when reading requires-python; the range itself comes from
# pyproject.toml, so widening support there widens the lock.
CANDIDATE_PYTHONS = tuple(f"3.{minor}" for minor in range(8, 20))


class LockError(Exception):
    """requirements.txt cannot be made from constraints.txt; the message says what to fix."""


def supported_pythons(pyproject_text: str) -> list[str]:
    requires = tomllib.loads(pyproject_text)["project"]["requires-python"]
    versions = [v for v in CANDIDATE_PYTHONS if SpecifierSet(requires).contains(f"{v}.0")]
    if not versions:
        raise LockError(f"pyproject.toml requires-python {requires!r} admits no Python 3 version")
    return versions


def _marker_key(marker: Marker | None) -> str:
    return "" if marker is None else str(marker)


def read_marked_pins(
    constraints_text: str,
) -> dict[NormalizedName, dict[str, tuple[str, str]]]:
    """constraints.txt as {canonical name: {marker ('' for none): (name as written, version)}}."""
    pins: dict[NormalizedName, dict[str, tuple[str, str]]] = {}
    for number, raw in enumerate(constraints_text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            requirement = None
        specifiers = list(requirement.specifier) if requirement else []
        if requirement is None or len(specifiers) != 1 or specifiers[0].operator != "==":
            raise LockError(f"constraints.txt line {number}: expected name==version, got {raw!r}")
        pins.setdefault(canonicalize_name(requirement.name), {})[
            _marker_key(requirement.marker)
        ] = (requirement.name, specifiers[0].version)
    return pins


def read_pins(constraints_text: str) -> dict[NormalizedName, tuple[str, str]]:
    """constraints.txt as {canonical name: (name as written, version)} for this Python.

    Of a package pinned once per Python range, the pin whose marker applies here.
    """
    pins: dict[NormalizedName, tuple[str, str]] = {}
    for name, by_marker in read_marked_pins(constraints_text).items():
        for marker, pin in by_marker.items():
            if not marker or Marker(marker).evaluate():
                pins[name] = pin
    return pins


def split_requirements(requirements_text: str) -> tuple[str, list[Requirement]]:
    """The hand-written head of requirements.txt (verbatim) and its direct requirements."""
    head = requirements_text.split(MARKER, 1)[0].rstrip("\n") + "\n"
    direct: list[Requirement] = []
    for number, raw in enumerate(head.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            direct.append(Requirement(line))
        except InvalidRequirement as error:
            raise LockError(f"requirements.txt line {number}: {error}") from None
    if not direct:
        raise LockError("requirements.txt lists no direct dependency above the marker line")
    return head, direct


def _environments(pythons: Iterable[str]) -> dict[str, dict[str, str]]:
    """Marker environments of the deployment target (Linux, CPython), by Python version."""
    environments = {}
    for version in pythons:
        env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
        env.update(
            python_version=version,
            python_full_version=f"{version}.0",
            sys_platform="linux",
            platform_system="Linux",
            os_name="posix",
            platform_python_implementation="CPython",
            implementation_name="cpython",
        )
        environments[version] = env
    return environments


def _applies_on(
    requirement: Requirement, extras: Iterable[str], envs: dict[str, dict[str, str]]
) -> frozenset[str]:
    """The Pythons on which ``requirement`` is installed, with ``extras`` of its parent asked for."""
    if requirement.marker is None:
        return frozenset(envs)
    marker = requirement.marker
    return frozenset(
        version
        for version, env in envs.items()
        if any(marker.evaluate({**env, "extra": x}) for x in ("", *extras))
    )


def lock(
    requirements_text: str,
    constraints_text: str,
    pyproject_text: str,
) -> str:
    """requirements.txt as it must be: the same head, then every transitive dependency pinned."""
    marked_pins = read_marked_pins(constraints_text)
    pins = read_pins(constraints_text)
    head, direct = split_requirements(requirements_text)
    envs = _environments(supported_pythons(pyproject_text))

    direct_names = set()
    for requirement in direct:
        name = canonicalize_name(requirement.name)
        direct_names.add(name)
        marker = _marker_key(requirement.marker)
        where = f"; {marker}" if marker else ""
        if name not in marked_pins:
            raise LockError(f"{requirement.name} is not in constraints.txt: add its tested pin")
        if marker not in marked_pins[name]:
            raise LockError(
                f"requirements.txt pins {requirement.name}{where} but constraints.txt has no pin "
                f"of {requirement.name} with that marker: add the tested one"
            )
        expected = f"=={marked_pins[name][marker][1]}"
        if str(requirement.specifier) != expected:
            raise LockError(
                f"requirements.txt pins {requirement.name}{requirement.specifier or ' (unpinned)'}"
                f"{where} but constraints.txt, the tested set, has {requirement.name}{expected}"
            )
    for name, by_marker in marked_pins.items():
        if name in direct_names and len(by_marker) > 1:
            pinned = {_marker_key(r.marker) for r in direct if canonicalize_name(r.name) == name}
            if missing := sorted(set(by_marker) - pinned):
                raise LockError(
                    f"constraints.txt pins {by_marker[missing[0]][0]} for {missing[0]} too: "
                    "requirements.txt must pin it with the same marker"
                )

    wanted_by: dict[NormalizedName, set[str]] = {}
    # On which supported Pythons each package is installed: a dependency one parent needs only
    # on some Pythons is still pinned plainly when another needs it on the rest.
    wanted_on: dict[NormalizedName, frozenset[str]] = {}
    everywhere = frozenset(envs)
    # A direct pin for another Python range is not installed here: its tree is followed there.
    queue: list[tuple[Requirement, str | None, frozenset[str]]] = [
        (r, None, everywhere) for r in direct if r.marker is None or r.marker.evaluate()
    ]
    visited: set[tuple[NormalizedName, frozenset[str], frozenset[str]]] = set()
    while queue:
        requirement, parent, pythons = queue.pop()
        name = canonicalize_name(requirement.name)
        if parent is not None:
            wanted_by.setdefault(name, set()).add(parent)
        wanted_on[name] = wanted_on.get(name, frozenset()) | pythons
        key = (name, frozenset(requirement.extras), pythons)
        if key in visited:
            continue
        visited.add(key)
        if name not in pins:
            raise LockError(
                f"{requirement.name} (needed by {parent or 'requirements.txt'}) is not in "
                "constraints.txt: install it and refresh constraints.txt with pip freeze"
            )
        try:
            installed = distribution(requirement.name)
        except PackageNotFoundError:
            raise LockError(
                f"{requirement.name} is not installed here: run `make install` first"
            ) from None
        if installed.version != pins[name][1]:
            raise LockError(
                f"{requirement.name} {installed.version} is installed but constraints.txt has "
                f"{pins[name][1]}: run `make install` (or refresh constraints.txt)"
            )
        for dependency_text in installed.requires or []:
            dependency = Requirement(dependency_text)
            applies = _applies_on(dependency, requirement.extras, envs) & pythons
            if applies:
                queue.append((dependency, pins[name][0], applies))
    for name, pythons in sorted(wanted_on.items()):
        if pythons != everywhere:
            raise LockError(
                f"{pins[name][0]} is needed on Python {', '.join(sorted(pythons))} only: "
                "pin it with an environment marker by hand"
            )

    lines = [head.rstrip("\n"), MARKER]
    for name in sorted(set(wanted_by) - direct_names):
        written, version = pins[name]
        via = ", ".join(sorted(wanted_by[name], key=str.lower))
        lines.append(f"{written}=={version}  # via {via}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.lock_requirements",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if requirements.txt is stale"
    )
    args = parser.parse_args(argv)
    path = ROOT / "requirements.txt"
    current = path.read_text()
    try:
        wanted = lock(
            current,
            (ROOT / "constraints.txt").read_text(),
            (ROOT / "pyproject.toml").read_text(),
        )
    except LockError as error:
        print(f"lock_requirements: {error}", file=sys.stderr)
        return 2
    if wanted == current:
        print("requirements.txt pins the tested set already")
        return 0
    if args.check:
        sys.stdout.writelines(
            difflib.unified_diff(
                current.splitlines(keepends=True),
                wanted.splitlines(keepends=True),
                "requirements.txt",
                "requirements.txt (from constraints.txt)",
            )
        )
        print("requirements.txt is stale: run `make lock`", file=sys.stderr)
        return 1
    path.write_text(wanted)
    print("requirements.txt rewritten from constraints.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
