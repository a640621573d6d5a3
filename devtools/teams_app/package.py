"""Build the Teams app package (a zip) and check one: layout, icons and the manifest.

The manifest is checked by Microsoft's ``@microsoft/app-manifest`` (Node, ``validate_manifest.cjs``)
against the schema it bundles, offline. What the schema cannot express is checked here: the zip
holds exactly the manifest and its two icons at its root, the icons have Teams' sizes, the outline
icon is white on transparent, and the one bot takes audio calls in personal scope.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.teams_app import icons, png
from devtools.teams_app.manifest import COLOR_ICON, OUTLINE_ICON, build_manifest
from devtools.teams_app.manifest import Developer as Developer

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = Path(__file__).with_name("validate_manifest.cjs")
MANIFEST = "manifest.json"
# Fixed zip timestamps: the same inputs give the same bytes.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
VALIDATOR_TIMEOUT_SECONDS = 60


class PackageError(RuntimeError):
    """The package cannot be built or checked at all (as opposed to a package with problems)."""


@dataclass
class Report:
    """What checking a package found; ``problems`` empty means valid."""

    manifest: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    schema: str = ""


def build_package(manifest: dict[str, Any]) -> bytes:
    """The zip: manifest.json and the two generated icons, at the root."""
    files = {
        MANIFEST: (json.dumps(manifest, indent=2) + "\n").encode(),
        COLOR_ICON: png.encode(icons.color_icon()),
        OUTLINE_ICON: png.encode(icons.outline_icon()),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def write_package(
    path: Path, *, bot_app_id: str, version: str, developer: Developer
) -> dict[str, Any]:
    manifest = build_manifest(bot_app_id=bot_app_id, version=version, developer=developer)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(build_package(manifest))
    return manifest


def _check_icon(name: str, data: bytes, size: int, *, outline: bool) -> list[str]:
    try:
        image = png.decode(data)
    except png.PngError as error:
        return [f"{name}: {error}"]
    problems = []
    if (image.width, image.height) != (size, size):
        problems.append(f"{name}: must be {size}x{size} pixels, is {image.width}x{image.height}")
    if outline:
        coloured = {p[:3] for p in image.pixels if p[3] and p[:3] != icons.WHITE}
        if coloured:
            problems.append(
                f"{name}: outline icons are white on transparent; found {len(coloured)} other colours"
            )
        if all(p[3] == 255 for p in image.pixels):
            problems.append(f"{name}: outline icons need a transparent background")
        if all(p[3] == 0 for p in image.pixels):
            problems.append(f"{name}: the outline icon is empty")
    return problems


def _check_bot(manifest: dict[str, Any], bot_app_id: str | None) -> list[str]:
    bots = manifest.get("bots") or []
    if len(bots) != 1:
        return [f"manifest: exactly one bot expected, found {len(bots)}"]
    bot = bots[0]
    problems = []
    if bot.get("supportsCalling") is not True:
        problems.append(
            "manifest: bots[0].supportsCalling must be true (Teams calls only such bots)"
        )
    if bot.get("supportsVideo") is not False:
        problems.append("manifest: bots[0].supportsVideo must be false (the bot takes audio only)")
    if bot.get("scopes") != ["personal"]:
        problems.append(f"manifest: bots[0].scopes must be ['personal'], is {bot.get('scopes')}")
    if bot_app_id is not None and str(bot.get("botId", "")).lower() != bot_app_id.lower():
        problems.append(
            f"manifest: bots[0].botId is {bot.get('botId')!r}, the deployment's bot is {bot_app_id!r}"
        )
    return problems


def run_validator(manifest_path: Path) -> tuple[str, list[str]]:
    """(bundled schema file, errors) from Microsoft's validator."""
    node = shutil.which("node")
    if node is None:
        raise PackageError("node is not on PATH; it runs Microsoft's manifest validator")
    if not (ROOT / "node_modules" / "@microsoft" / "app-manifest").is_dir():
        raise PackageError("@microsoft/app-manifest is not installed: run `make install` (npm ci)")
    completed = subprocess.run(
        [node, str(VALIDATOR), str(manifest_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=VALIDATOR_TIMEOUT_SECONDS,
        check=False,
    )
    try:
        result = json.loads(completed.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise PackageError(
            f"the manifest validator failed (exit {completed.returncode}): {completed.stderr.strip()}"
        ) from None
    if completed.returncode not in (0, 1):
        raise PackageError("manifest not checked: " + "; ".join(result.get("errors", [])))
    return str(result.get("schema", "")), [f"manifest schema: {e}" for e in result["errors"]]


def check_package(data: bytes, *, bot_app_id: str | None = None) -> Report:
    """Every problem of the package ``data``; the manifest goes through Microsoft's validator."""
    report = Report()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        report.problems.append("not a zip file")
        return report
    with archive:
        names = archive.namelist()
        if MANIFEST not in names:
            report.problems.append("manifest.json is missing from the zip's root")
            return report
        manifest_bytes = archive.read(MANIFEST)
        try:
            report.manifest = json.loads(manifest_bytes)
        except json.JSONDecodeError as error:
            report.problems.append(f"manifest.json is not JSON: {error}")
            return report
        declared = report.manifest.get("icons", {})
        expected = {MANIFEST, declared.get("color"), declared.get("outline")}
        if set(names) != expected:
            report.problems.append(
                f"the zip must hold exactly {sorted(str(n) for n in expected)} at its root, "
                f"holds {sorted(names)}"
            )
        for key, size, outline in (
            ("color", icons.COLOR_SIZE, False),
            ("outline", icons.OUTLINE_SIZE, True),
        ):
            name = declared.get(key)
            if name in names:
                report.problems += _check_icon(name, archive.read(name), size, outline=outline)
            else:
                report.problems.append(f"icons.{key} {name!r} is not in the zip")
    report.problems += _check_bot(report.manifest, bot_app_id)
    with tempfile.TemporaryDirectory() as scratch:
        manifest_path = Path(scratch) / MANIFEST
        manifest_path.write_bytes(manifest_bytes)
        report.schema, errors = run_validator(manifest_path)
    report.problems += errors
    return report


AZD_VALUE = re.compile(r'^(?P<name>[A-Za-z_][A-Za-z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"$')


def parse_azd_values(text: str) -> dict[str, str]:
    """``azd env get-values`` output (NAME="value" lines) as a dict."""
    values = {}
    for line in text.splitlines():
        match = AZD_VALUE.match(line.strip())
        if match:
            values[match["name"]] = re.sub(r"\\(.)", r"\1", match["value"])
    return values


def bot_app_id_from_azd() -> str | None:
    """BOT_APP_ID of the current azd environment (an output of infra/main.bicep), if any."""
    azd = shutil.which("azd")
    if azd is None:
        return None
    completed = subprocess.run(
        [azd, "env", "get-values"], capture_output=True, text=True, timeout=60, check=False
    )
    if completed.returncode != 0:
        return None
    return parse_azd_values(completed.stdout).get("BOT_APP_ID") or None
