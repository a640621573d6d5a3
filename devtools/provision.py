"""Create the app's queues, container and table in local storage (what Bicep does in Azure).

    python -m devtools.provision [--connection-string CS]

Uses ``--connection-string``, else ``AzureWebJobsStorage`` from the environment, else from
``local.settings.json``, else ``UseDevelopmentStorage=true`` (Azurite on its default ports).
Run it once after starting Azurite and before ``func start``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from devtools.demo.stack import provision_storage

DEVELOPMENT_STORAGE = "UseDevelopmentStorage=true"


def storage_connection_string(explicit: str | None, settings_file: Path) -> str:
    if explicit:
        return explicit
    from_environment = os.environ.get("AzureWebJobsStorage")  # noqa: SIM112 - the host's own name
    if from_environment:
        return from_environment
    if settings_file.exists():
        values = json.loads(settings_file.read_text()).get("Values", {})
        if values.get("AzureWebJobsStorage"):
            return str(values["AzureWebJobsStorage"])
    return DEVELOPMENT_STORAGE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--connection-string", help="storage connection string (default: see above)"
    )
    parser.add_argument("--settings", type=Path, default=Path("local.settings.json"))
    args = parser.parse_args(argv)
    provision_storage(storage_connection_string(args.connection_string, args.settings))
    print(
        "created (if missing): queues recording-downloads, recording-downloads-poison; "
        "container recordings; table recordingoperations"
    )


if __name__ == "__main__":
    main()
