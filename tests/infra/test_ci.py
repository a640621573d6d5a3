"""The GitHub Actions workflows and the dev container: they parse and do what the docs say.

No YAML library is among the test dependencies, so the workflows are read by a small reader of
the block-style YAML they are written in (mappings, lists, scalars); anything it does not know
fails the test rather than being guessed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.infra.test_bicep import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"


def _scalar(text: str) -> Any:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    assert not text.startswith(("{", "[", "|", ">", "&", "*", "!")), f"unsupported YAML: {text}"
    return text


def read_yaml(text: str) -> Any:
    """Block-style YAML (what the workflows use) to Python: dicts, lists, strings, None."""
    lines = [
        (len(raw) - len(raw.lstrip(" ")), raw.strip())
        for raw in text.splitlines()
        if raw.strip() and not raw.lstrip().startswith("#")
    ]
    for _, line in lines:
        assert "\t" not in line, "tabs are not YAML indentation"

    def block(index: int, indent: int) -> tuple[Any, int]:
        if index >= len(lines) or lines[index][0] < indent:
            return None, index
        indent = lines[index][0]
        if lines[index][1].startswith("- "):
            items: list[Any] = []
            while index < len(lines) and lines[index][0] == indent:
                line = lines[index][1]
                assert line.startswith("- "), f"mixed list and mapping: {line}"
                # "- key: value" opens a mapping whose other keys sit two columns further in.
                rest = line[2:]
                lines[index] = (indent + 2, rest)
                if re.match(r"^[\w.-]+:( |$)", rest):
                    value, index = block(index, indent + 2)
                else:
                    value, index = _scalar(rest), index + 1
                items.append(value)
            return items, index
        mapping: dict[str, Any] = {}
        while index < len(lines) and lines[index][0] == indent:
            line = lines[index][1]
            match = re.match(r"^([\w.-]+):(?: (.*))?$", line)
            assert match, f"not a mapping entry: {line}"
            key, value = match.group(1), match.group(2)
            assert key not in mapping, f"duplicate key {key}"
            if value is None or value.startswith("#"):
                mapping[key], index = block(index + 1, indent + 1)
            else:
                mapping[key], index = _scalar(value.split(" #", 1)[0].strip()), index + 1
        return mapping, index

    document, end = block(0, 0)
    assert end == len(lines), f"unparsed from line {lines[end][1]!r}"
    return document


def workflow(name: str) -> dict[str, Any]:
    document = read_yaml((WORKFLOWS / name).read_text())
    assert isinstance(document, dict)
    return document


def test_the_reader_reads_what_it_is_given() -> None:
    text = "a:\n  b: 'x'\n  c:\n    - d: 1\n      e: 2\n    - f\non:\n  push:\n"
    assert read_yaml(text) == {
        "a": {"b": "x", "c": [{"d": "1", "e": "2"}, "f"]},
        "on": {"push": None},
    }


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    steps = job["steps"]
    assert all(isinstance(step, dict) for step in steps)
    return steps  # type: ignore[no-any-return]


def test_ci_runs_make_test_on_ubuntu_with_python_3_12_and_node_20() -> None:
    ci = workflow("ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    (job,) = ci["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    steps = _steps(job)
    uses = {step.get("uses", "").split("@")[0]: step for step in steps}
    assert uses["actions/setup-python"]["with"]["python-version"] == "3.12"
    assert uses["actions/setup-node"]["with"]["node-version"] == "20"
    assert [step["run"] for step in steps if "run" in step] == ["make test"]
    # The README's test command is that one.
    assert "make test" in (ROOT / "README.md").read_text()
    assert ci["permissions"] == {"contents": "read"}


def test_deploy_workflow_logs_in_with_oidc_and_no_secret() -> None:
    text = (WORKFLOWS / "azure-dev.yml").read_text()
    assert "secrets." not in text, "federated credentials only"
    deploy = workflow("azure-dev.yml")
    assert deploy["permissions"]["id-token"] == "write"
    (job,) = deploy["jobs"].values()
    steps = _steps(job)
    (login,) = [step for step in steps if step.get("uses", "").startswith("azure/login@")]
    assert login["with"] == {
        "client-id": "${{ vars.AZURE_CLIENT_ID }}",
        "tenant-id": "${{ vars.AZURE_TENANT_ID }}",
        "subscription-id": "${{ vars.AZURE_SUBSCRIPTION_ID }}",
    }
    runs = [step["run"] for step in steps if "run" in step]
    assert any("--federated-credential-provider github" in run for run in runs)
    provision = runs.index("azd provision --no-prompt")
    assert runs.index("azd deploy --no-prompt") > provision
    # What `azd pipeline config` sets as repository variables.
    for name in ("AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_SUBSCRIPTION_ID"):
        assert job["env"][name] == f"${{{{ vars.{name} }}}}"


def test_devcontainer_names_python_node_azure_cli_azd_and_core_tools() -> None:
    config = json.loads((ROOT / ".devcontainer" / "devcontainer.json").read_text())
    assert config["image"].startswith("mcr.microsoft.com/devcontainers/python:")
    assert "3.12" in config["image"]
    features = {name.rsplit(":", 1)[0]: options for name, options in config["features"].items()}
    assert features["ghcr.io/devcontainers/features/node"] == {"version": "20"}
    assert "ghcr.io/devcontainers/features/azure-cli" in features
    assert "ghcr.io/azure/azure-dev/azd" in features
    assert "ghcr.io/jlaundry/devcontainer-features/azure-functions-core-tools" in features
    assert config["postCreateCommand"] == "make install"
    assert 7071 in config["forwardPorts"], "func start's port"
