"""The docs stay true to the code: the example notebook is valid and its code compiles, every command-line
flag is documented in docs/cli.md, and every module the README's layout table names exists."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from bertkit.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "sentiment.ipynb"


def test_notebook_is_valid_and_its_code_compiles():
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4 and notebook["metadata"]["kernelspec"]["language"] == "python"
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code, "the notebook has no code cells"
    for cell in notebook["cells"]:
        assert cell["cell_type"] in ("code", "markdown") and isinstance(cell["source"], list), cell
    for i, cell in enumerate(code):
        assert cell["outputs"] == [] and cell["execution_count"] is None, "commit the notebook unexecuted"
        compile("".join(cell["source"]), f"{NOTEBOOK.name}, code cell {i + 1}", "exec")
    assert any("bertkit.finetune(" in "".join(cell["source"]) for cell in code)


def _flags(parser: argparse.ArgumentParser, command: str = "bertkit") -> dict[str, set[str]]:
    """Every option string of every (sub)command, keyed by the command's name."""
    found: dict[str, set[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_flags(sub, f"{command} {name}"))
        else:
            found.setdefault(command, set()).update(s for s in action.option_strings if s.startswith("--") and s != "--help")
    return found


def test_every_flag_is_in_the_cli_docs():
    """Each command's flags appear in the docs/cli.md section named after it ("## finetune" covers every task)."""
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    sections = {heading: set(re.findall(r"--[a-z0-9][a-z0-9-]*", body))
                for heading, body in re.findall(r"^## ([^\n]+)\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)}
    missing = {}
    for command, flags in _flags(build_parser()).items():
        name = command.removeprefix("bertkit").strip()
        if not name:
            continue  # the top-level parser has only --help
        heading = next((h for h in sections if name == h or name.startswith(h + " ")), None)
        documented = sections.get(heading, set())
        if flags - documented:
            missing[command] = sorted(flags - documented)
    assert not missing, f"docs/cli.md does not document, in the command's own section: {missing}"


def test_layout_table_names_modules_that_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Layout", 1)[1]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    assert rows, "the README has no layout table"
    missing = []
    for row in rows:
        names = re.findall(r"`([^`]+)`", row)  # the first with its folder, the rest in the same folder
        first = names[0].rstrip("/")
        folder = first.rsplit("/", 1)[0] + "/" if "/" in first else ""
        paths = [name if "/" in name.rstrip("/") else folder + name for name in names]
        missing += [path for path in paths if not (ROOT / path).exists()]
    assert not missing, f"the README's layout table names what is not in the repository: {missing}"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_relative_links_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) > 1, "docs/ has no pages"
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            file, _, anchor = target.partition("#")
            linked = (page.parent / file).resolve() if file else page
            assert linked.exists(), f"{page.name} links to {target}, which does not exist"
            if anchor:
                headings = re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"), flags=re.M)
                assert anchor in {_anchor(h) for h in headings}, f"{page.name} links to {target}: no such heading"
