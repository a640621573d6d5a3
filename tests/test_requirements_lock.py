"""The deployment installs the tested tree: requirements.txt pins what constraints.txt pins.

Azure's build runs ``pip install -r requirements.txt`` and never sees constraints.txt (it is in
.funcignore), so every package the app pulls in must be pinned in requirements.txt itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pathspec import GitIgnoreSpec

from devtools.lock_requirements import MARKER, LockError, lock, supported_pythons

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = (ROOT / "requirements.txt").read_text()
CONSTRAINTS = (ROOT / "constraints.txt").read_text()
PYPROJECT = (ROOT / "pyproject.toml").read_text()


def test_requirements_txt_pins_the_whole_tested_tree() -> None:
    assert lock(REQUIREMENTS, CONSTRAINTS, PYPROJECT) == REQUIREMENTS, (
        "requirements.txt is stale: run `make lock`"
    )


def _pin(line: str) -> tuple[str, str, str]:
    """A ``name==version[; marker]`` line as (name, marker, version)."""
    requirement, _, marker = line.split("#")[0].partition(";")
    name, version = requirement.split("==")
    return name.split("[")[0].strip().lower(), marker.strip(), version.strip()


def test_every_pin_in_requirements_txt_is_the_tested_version() -> None:
    tested = {
        (name, marker): version
        for name, marker, version in (
            _pin(line)
            for line in CONSTRAINTS.splitlines()
            if "==" in line and not line.startswith("#")
        )
    }
    pinned = [line for line in REQUIREMENTS.splitlines() if "==" in line.split("#")[0]]
    assert len(pinned) > 20  # the transitive part is there, not only the direct dependencies
    for line in pinned:
        name, marker, version = _pin(line)
        assert tested[name, marker] == version, line


def test_azure_functions_is_pinned_once_per_side_of_python_3_13() -> None:
    # 1.x refuses 3.13 and 2.x requires it: both pins, with the same markers, in both files.
    for text in (REQUIREMENTS, CONSTRAINTS):
        pins = sorted(
            _pin(line) for line in text.splitlines() if line.startswith("azure-functions==")
        )
        assert [(marker, version.split(".")[0]) for _, marker, version in pins] == [
            ('python_version < "3.13"', "1"),
            ('python_version >= "3.13"', "2"),
        ]


def test_a_marked_pin_missing_from_requirements_txt_is_refused() -> None:
    one_sided = "".join(
        line
        for line in REQUIREMENTS.splitlines(keepends=True)
        if not (line.startswith("azure-functions==") and ">=" in line)
    )
    assert one_sided != REQUIREMENTS
    with pytest.raises(LockError, match=r"requirements\.txt must pin it with the same marker"):
        lock(one_sided, CONSTRAINTS, PYPROJECT)


def test_a_direct_pin_other_than_the_tested_one_is_refused() -> None:
    drifted = REQUIREMENTS.replace("httpx==0.28.1", "httpx==0.27.0")
    assert drifted != REQUIREMENTS
    with pytest.raises(LockError, match=r"httpx==0\.27\.0.*constraints\.txt.*httpx==0\.28\.1"):
        lock(drifted, CONSTRAINTS, PYPROJECT)


def test_a_transitive_dependency_missing_from_requirements_txt_is_put_back() -> None:
    missing = "".join(
        line for line in REQUIREMENTS.splitlines(keepends=True) if not line.startswith("h11==")
    )
    assert missing != REQUIREMENTS
    assert lock(missing, CONSTRAINTS, PYPROJECT) == REQUIREMENTS


def test_a_dependency_absent_from_the_tested_set_is_refused() -> None:
    untested = "\n".join(
        line for line in CONSTRAINTS.splitlines() if not line.lower().startswith("h11==")
    )
    with pytest.raises(LockError, match=r"h11 \(needed by httpcore\) is not in constraints\.txt"):
        lock(REQUIREMENTS, untested, PYPROJECT)


def test_the_lock_covers_the_pythons_pyproject_supports() -> None:
    assert supported_pythons(PYPROJECT) == ["3.11", "3.12", "3.13"]


def test_the_package_ships_requirements_txt_and_none_of_the_dev_files() -> None:
    ignored = GitIgnoreSpec.from_lines((ROOT / ".funcignore").read_text().splitlines())
    shipped = [
        "requirements.txt",
        "function_app.py",
        "host.json",
        "blueprints/health.py",
        "shared/settings.py",
        "LICENSE",
    ]
    kept_out = [
        "constraints.txt",
        "requirements-dev.txt",
        "local.settings.json",
        "devtools/lock_requirements.py",
        "tests/test_requirements_lock.py",
        "benchmarks/__main__.py",
        "infra/main.bicep",
        ".vscode/launch.json",
        "test.http",
    ]
    assert [path for path in shipped if ignored.match_file(path)] == []
    assert [path for path in kept_out if not ignored.match_file(path)] == []
    assert MARKER in REQUIREMENTS
