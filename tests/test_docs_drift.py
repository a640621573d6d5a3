"""The docs cannot drift from the code: the README's tables and every doc's links are checked.

- every HTTP route ``function_app.py`` registers (found as the local host finds them,
  :mod:`devtools.localhost.discovery`) has a row in the README's routes table, with its auth
  level;
- every setting of :class:`shared.settings_model.Settings` (by its app-setting name) has a row in
  the README's settings table;
- every relative link of README.md and docs/*.md resolves from the doc's own folder, and every
  doc in docs/ is reachable from the README.

Routes and settings are added on several branches at once; a failure names the row to add.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`")


def _table_after(text: str, heading: str) -> list[list[str]]:
    """The data rows (cells) of the first Markdown table from the line that starts ``heading``
    (the table's header row, or a line before the table)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    rows: list[list[str]] = []
    for line in lines[start:]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(set(cell) <= {"-", ":"} for cell in cells):
                rows.append(cells)
        elif rows:
            break
    return rows[1:]  # without the header row


def registered_routes() -> list[tuple[str, str, str]]:
    """(method, /api/route, auth level) of every HTTP function of function_app.py."""
    from devtools.localhost.discovery import discover_functions, load_function_app

    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    prefix = (
        json.loads((ROOT / "host.json").read_text())
        .get("extensions", {})
        .get("http", {})
        .get("routePrefix", "api")
    )
    functions = discover_functions(load_function_app("function_app"), {**example, **os.environ})
    return sorted(
        (method, f"/{prefix}/{function.route}", function.auth_level)
        for function in functions.http
        for method in function.methods
    )


def documented_routes() -> dict[tuple[str, str], str]:
    """{(method, path without its query): auth column} from the README's routes table."""
    rows = _table_after(README.read_text(), "HTTP routes (prefix `/api`)")
    documented = {}
    for cells in rows:
        spans = CODE.findall(cells[0])
        if not spans:
            continue
        method, _, target = spans[0].partition(" ")
        documented[(method, target.split("?", 1)[0])] = cells[1]
    return documented


def test_every_registered_route_has_a_row_in_the_readme() -> None:
    routes = registered_routes()
    assert len(routes) >= 8
    documented = documented_routes()
    missing = [
        f"| `{method} {path}` | {auth} | <purpose> |"
        for method, path, auth in routes
        if (method, path) not in documented
    ]
    assert missing == [], "README.md, routes table: add the row(s)\n" + "\n".join(missing)
    wrong_auth = [
        f"`{method} {path}`: the auth column must start with {auth!r}, "
        f"not {documented[(method, path)]!r}"
        for method, path, auth in routes
        if not documented[(method, path)].startswith(auth)
    ]
    assert wrong_auth == [], "README.md, routes table:\n" + "\n".join(wrong_auth)


def documented_settings() -> set[str]:
    """Every setting name in the first column of the README's settings table.

    ``AzureWebJobsStorage__queueServiceUri``, ``__blobServiceUri``: a span starting ``__`` is
    the suffix of the previous full name's prefix.
    """
    names: set[str] = set()
    for cells in _table_after(README.read_text(), "| name | default | meaning |"):
        base = ""
        for span in CODE.findall(cells[0]):
            if span.startswith("__") and base:
                names.add(base + span)
            elif span.startswith("_") and base:
                names.add(base.rsplit("_", 1)[0] + span)
            else:
                names.add(span)
                base = span.split("__", 1)[0] if "__" in span else span
    return names


def test_every_setting_has_a_row_in_the_readme() -> None:
    from pydantic_core import PydanticUndefined

    from shared.settings_model import Settings

    documented = documented_settings()
    missing = []
    for field in Settings.model_fields.values():
        name = field.alias
        assert name is not None
        if name in documented:
            continue
        default = field.default
        shown = (
            "required"
            if default is PydanticUndefined
            else ",".join(default) or "empty"
            if isinstance(default, tuple)
            else str(default).lower()
            if isinstance(default, bool)
            else "empty"
            if default is None
            else str(default)
        )
        missing.append(f"| `{name}` | `{shown}` | <meaning> |")
    assert missing == [], "README.md, settings table (## Settings): add the row(s)\n" + "\n".join(
        missing
    )


def test_the_readme_documents_no_setting_the_app_does_not_read() -> None:
    from shared.settings_model import Settings

    read = {field.alias for field in Settings.model_fields.values()}
    assert documented_settings() - read == set()


def _links(doc: Path) -> list[str]:
    targets = []
    for target in LINK.findall(doc.read_text()):
        parts = urlsplit(target)
        if parts.scheme or target.startswith(("#", "mailto:")):
            continue
        targets.append(unquote(parts.path))
    return targets


def test_every_relative_link_of_the_docs_resolves_from_the_doc() -> None:
    broken = [
        f"{doc.relative_to(ROOT)}: ({target}) -> {(doc.parent / target).resolve().relative_to(ROOT)}"
        for doc in DOCS
        for target in _links(doc)
        if target and not (doc.parent / target).exists()
    ]
    assert broken == [], "links to files that do not exist:\n" + "\n".join(broken)


def test_every_doc_is_reachable_from_the_readme() -> None:
    reached = {README.resolve()}
    frontier = [README]
    while frontier:
        doc = frontier.pop()
        for target in _links(doc):
            path = (doc.parent / target).resolve()
            if path.suffix == ".md" and path.exists() and path not in reached:
                reached.add(path)
                frontier.append(path)
    orphans = [str(doc.relative_to(ROOT)) for doc in DOCS if doc.resolve() not in reached]
    assert orphans == [], "link these docs from README.md (or a doc it links): " + ", ".join(
        orphans
    )
