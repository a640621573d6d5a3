"""The Teams app package: built by the project, checked by Microsoft's validator (offline).

One package is built per session through the same command `make teams-app` runs; each test then
reads it or a deliberately broken copy. Node and ``@microsoft/app-manifest`` must be installed
(`make install`): a package that cannot be validated fails the suite rather than skipping.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devtools.teams_app import icons, png
from devtools.teams_app.__main__ import main
from devtools.teams_app.manifest import (
    MANIFEST_VERSION,
    Developer,
    ManifestInputError,
    build_manifest,
    teams_app_id,
)
from devtools.teams_app.package import (
    PackageError,
    build_package,
    check_package,
    parse_azd_values,
)

ROOT = Path(__file__).resolve().parents[2]
BOT_APP_ID = "a5c1f5ad-0b6f-4f0c-9a5e-1b2c3d4e5f60"
OTHER_BOT_APP_ID = "0f3b9d64-8a61-4c8e-b0a5-7d2e9c4f1a23"
BUNDLED_SCHEMAS = ROOT / "node_modules/@microsoft/app-manifest/build/json-schemas/teams"


@pytest.fixture(scope="session")
def package(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("dist") / "teams-app.zip"
    assert main(["build", "--bot-app-id", BOT_APP_ID, "--out", str(out)]) == 0
    return out.read_bytes()


def files(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rezip(contents: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in contents.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def with_manifest(data: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    contents = files(data)
    manifest = json.loads(contents["manifest.json"])
    change(manifest)
    contents["manifest.json"] = json.dumps(manifest).encode()
    return rezip(contents)


# ------------------------------------------------------------------------------------------------
# The package as built
# ------------------------------------------------------------------------------------------------


def test_built_package_passes_microsofts_validator_and_the_package_checks(package: bytes) -> None:
    report = check_package(package, bot_app_id=BOT_APP_ID)
    assert report.problems == []
    assert report.schema.startswith(f"teams/v{MANIFEST_VERSION}/MicrosoftTeams.schema.json")


def test_zip_holds_the_manifest_and_two_icons_at_its_root(package: bytes) -> None:
    assert sorted(files(package)) == ["color.png", "manifest.json", "outline.png"]


def test_manifest_declares_one_audio_calling_bot_in_personal_scope(package: bytes) -> None:
    manifest = json.loads(files(package)["manifest.json"])
    (bot,) = manifest["bots"]
    assert bot["botId"] == BOT_APP_ID
    assert bot["supportsCalling"] is True
    assert bot["supportsVideo"] is False
    assert bot["scopes"] == ["personal"]


def test_manifest_is_on_a_current_schema_that_the_validator_bundles(package: bytes) -> None:
    manifest = json.loads(files(package)["manifest.json"])
    major, minor = (int(part) for part in manifest["manifestVersion"].split("."))
    assert (major, minor) >= (1, 19)
    assert manifest["$schema"].endswith(
        f"/v{manifest['manifestVersion']}/MicrosoftTeams.schema.json"
    )
    assert (
        BUNDLED_SCHEMAS / f"v{manifest['manifestVersion']}" / "MicrosoftTeams.schema.json"
    ).is_file()


def test_app_id_is_a_stable_guid_per_bot_and_version_is_semver(package: bytes) -> None:
    manifest = json.loads(files(package)["manifest.json"])
    guid = r"[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}"
    assert re.fullmatch(guid, manifest["id"])
    # Rebuilding for the same bot updates the same Teams app; another bot is another app.
    assert manifest["id"] == teams_app_id(BOT_APP_ID) == teams_app_id(BOT_APP_ID.upper())
    assert teams_app_id(OTHER_BOT_APP_ID) != manifest["id"]
    assert manifest["id"] != BOT_APP_ID
    assert re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"])
    assert all(
        url.startswith("https://") for key, url in manifest["developer"].items() if key != "name"
    )


def test_same_inputs_give_the_same_bytes(package: bytes) -> None:
    assert build_package(build_manifest(bot_app_id=BOT_APP_ID)) == package


def test_icons_have_teams_sizes_and_the_outline_is_white_on_transparent(package: bytes) -> None:
    contents = files(package)
    color = png.decode(contents["color.png"])
    outline = png.decode(contents["outline.png"])
    assert (color.width, color.height) == (192, 192)
    assert (outline.width, outline.height) == (32, 32)
    assert all(alpha == 255 for *_, alpha in color.pixels), "the colour icon is opaque"
    assert len(set(color.pixels)) > 2, "the colour icon draws something"
    visible = [p for p in outline.pixels if p[3]]
    assert visible, "the outline icon draws something"
    assert {p[:3] for p in visible} == {(255, 255, 255)}
    transparent = sum(1 for p in outline.pixels if p[3] == 0)
    assert transparent > len(outline.pixels) // 2


# ------------------------------------------------------------------------------------------------
# Broken packages fail
# ------------------------------------------------------------------------------------------------


def test_a_manifest_microsoft_rejects_fails_the_check(package: bytes) -> None:
    def break_it(manifest: dict[str, Any]) -> None:
        del manifest["developer"]["privacyUrl"]
        manifest["bots"][0]["supportsVideo"] = "no"
        manifest["id"] = "not-a-guid"

    report = check_package(with_manifest(package, break_it), bot_app_id=BOT_APP_ID)
    schema_errors = [p for p in report.problems if p.startswith("manifest schema:")]
    joined = "\n".join(schema_errors)
    assert "privacyUrl" in joined
    assert "/bots/0/supportsVideo must be boolean" in joined
    assert "/id must match pattern" in joined


def test_cli_check_exits_non_zero_on_a_broken_package(
    package: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.zip"
    broken.write_bytes(with_manifest(package, lambda m: m["bots"][0].update(supportsCalling=False)))
    assert main(["check", str(broken), "--bot-app-id", BOT_APP_ID]) == 1
    assert "supportsCalling must be true" in capsys.readouterr().err


def test_package_checks_catch_what_the_schema_cannot(package: bytes) -> None:
    contents = files(package)
    wrong = icons.outline_icon(size=48)
    coloured = png.Image(32, 32, ((255, 0, 0, 255),) * (32 * 32))
    contents["outline.png"] = png.encode(coloured)
    contents["color.png"] = png.encode(wrong)
    contents["notes.txt"] = b"stray file"

    def video_bot(manifest: dict[str, Any]) -> None:
        manifest["bots"][0].update(supportsVideo=True, scopes=["personal", "team"])

    report = check_package(with_manifest(rezip(contents), video_bot), bot_app_id=OTHER_BOT_APP_ID)
    joined = "\n".join(report.problems)
    assert "color.png: must be 192x192 pixels, is 48x48" in joined
    assert "outline.png: outline icons are white on transparent" in joined
    assert "outline.png: outline icons need a transparent background" in joined
    assert "notes.txt" in joined
    assert "supportsVideo must be false" in joined
    assert "scopes must be ['personal']" in joined
    assert f"the deployment's bot is '{OTHER_BOT_APP_ID}'" in joined


def test_missing_manifest_or_not_a_zip_are_problems_not_crashes(package: bytes) -> None:
    assert check_package(b"not a zip").problems == ["not a zip file"]
    contents = files(package)
    del contents["manifest.json"]
    assert check_package(rezip(contents)).problems == [
        "manifest.json is missing from the zip's root"
    ]


def test_a_schema_the_validator_does_not_bundle_is_refused_not_fetched(package: bytes) -> None:
    def elsewhere(manifest: dict[str, Any]) -> None:
        manifest["$schema"] = "https://example.com/schemas/MicrosoftTeams.schema.json"

    with pytest.raises(
        PackageError, match="not a Teams schema that @microsoft/app-manifest bundles"
    ):
        check_package(with_manifest(package, elsewhere))


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bot_app_id": "my-bot"}, "BOT_APP_ID must be the bot's app registration client id"),
        ({"bot_app_id": BOT_APP_ID, "version": "1.0"}, "version must be MAJOR.MINOR.PATCH"),
        (
            {
                "bot_app_id": BOT_APP_ID,
                "developer": Developer("Contoso", "http://contoso.com", "https://x", "https://y"),
            },
            "website url must be an https:// URL",
        ),
    ],
)
def test_bad_inputs_are_refused_with_the_reason(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestInputError, match=re.escape(message)):
        build_manifest(**kwargs)


def test_build_without_a_bot_id_explains_where_it_comes_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BOT_APP_ID", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no azd here
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "--out", str(tmp_path / "x.zip")])
    assert exit_info.value.code == 2
    assert "BOT_APP_ID=<client id>" in capsys.readouterr().err
    assert not (tmp_path / "x.zip").exists()


def test_azd_env_values_are_parsed() -> None:
    text = 'AZURE_LOCATION="swedencentral"\nBOT_APP_ID="a5c1f5ad-0b6f-4f0c-9a5e-1b2c3d4e5f60"\nNOTE="say \\"hi\\""\n'
    values = parse_azd_values(text)
    assert values["BOT_APP_ID"] == BOT_APP_ID
    assert values["AZURE_LOCATION"] == "swedencentral"
    assert values["NOTE"] == 'say "hi"'


def test_png_reader_rejects_damage() -> None:
    data = png.encode(icons.outline_icon())
    assert png.decode(data) == icons.outline_icon()
    with pytest.raises(png.PngError, match="signature"):
        png.decode(b"GIF89a" + data[6:])
    damaged = bytearray(data)
    damaged[45] ^= 0xFF  # inside the IDAT chunk's data
    with pytest.raises(png.PngError, match="bad checksum"):
        png.decode(bytes(damaged))
