"""Build or check the Teams app package (see ``devtools.teams_app``).

The bot's app id comes from --bot-app-id, else the BOT_APP_ID environment variable, else the
current azd environment (`azd env get-values`, where infra/main.bicep's BOT_APP_ID output lands).
The developer fields appear on the app's details page: set them to your organisation's pages with
the options below or TEAMS_DEVELOPER_NAME, TEAMS_WEBSITE_URL, TEAMS_PRIVACY_URL, TEAMS_TERMS_URL.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from devtools.teams_app.manifest import PLACEHOLDER_DEVELOPER, ManifestInputError
from devtools.teams_app.package import (
    Developer,
    PackageError,
    bot_app_id_from_azd,
    check_package,
    write_package,
)


def _bot_app_id(explicit: str | None) -> str | None:
    return explicit or os.environ.get("BOT_APP_ID") or bot_app_id_from_azd()


def _developer(args: argparse.Namespace) -> Developer:
    return Developer(
        name=args.developer_name
        or os.environ.get("TEAMS_DEVELOPER_NAME")
        or PLACEHOLDER_DEVELOPER.name,
        website_url=args.website_url
        or os.environ.get("TEAMS_WEBSITE_URL")
        or PLACEHOLDER_DEVELOPER.website_url,
        privacy_url=args.privacy_url
        or os.environ.get("TEAMS_PRIVACY_URL")
        or PLACEHOLDER_DEVELOPER.privacy_url,
        terms_of_use_url=args.terms_url
        or os.environ.get("TEAMS_TERMS_URL")
        or PLACEHOLDER_DEVELOPER.terms_of_use_url,
    )


def _print_report(path: Path, problems: list[str], schema: str) -> int:
    if problems:
        print(f"{path}: NOT a valid Teams app package", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"{path}: valid (schema {schema}; icons and bot checked)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.teams_app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="write the package and check it")
    build.add_argument("--bot-app-id", help="the bot's app registration client id (BOT_APP_ID)")
    build.add_argument("--out", type=Path, default=Path("dist/teams-app.zip"))
    build.add_argument("--version", default="1.0.0", help="app version; raise it for each update")
    build.add_argument("--developer-name")
    build.add_argument("--website-url")
    build.add_argument("--privacy-url")
    build.add_argument("--terms-url")
    check = commands.add_parser("check", help="check an existing package")
    check.add_argument("package", type=Path)
    check.add_argument("--bot-app-id", help="fail unless the package's bot is this app id")
    args = parser.parse_args(argv)

    bot_app_id = _bot_app_id(args.bot_app_id)
    try:
        if args.command == "build":
            if not bot_app_id:
                parser.error(
                    "no bot app id: pass BOT_APP_ID=<client id> (make) or --bot-app-id, "
                    "or run it where `azd env get-values` shows BOT_APP_ID (after `azd up`)"
                )
            developer = _developer(args)
            manifest = write_package(
                args.out, bot_app_id=bot_app_id, version=args.version, developer=developer
            )
            print(
                f"wrote {args.out}: Teams app {manifest['id']} v{manifest['version']}, bot {bot_app_id}"
            )
            if developer == PLACEHOLDER_DEVELOPER:
                print(
                    "note: developer name and URLs are placeholders; set TEAMS_DEVELOPER_NAME, "
                    "TEAMS_WEBSITE_URL, TEAMS_PRIVACY_URL, TEAMS_TERMS_URL before publishing to your org"
                )
            path = args.out
        else:
            path = args.package
        report = check_package(path.read_bytes(), bot_app_id=bot_app_id)
    except (ManifestInputError, PackageError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return _print_report(path, report.problems, report.schema)


if __name__ == "__main__":
    sys.exit(main())
