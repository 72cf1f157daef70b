"""What README.md and prompts/README.md say, checked against what Flywheel does."""

from __future__ import annotations

import argparse
import inspect
import re
import subprocess
import sys
from pathlib import Path

from bot import cli, settings
from bot.prompts import PromptSet

from conftest import PROMPTS, REPO, SHIPPED

README = (REPO / "README.md").read_text(encoding="utf-8")
PROMPTS_README = (REPO / "prompts" / "README.md").read_text(encoding="utf-8")


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def table_rows(text: str) -> list[list[str]]:
    rows = [re.split(r"(?<!\\)\|", line.strip().strip("|")) for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|---")]
    return [[cell.strip() for cell in row] for row in rows[1:]]  # without the header


# -- Configuration ----------------------------------------------------------------------------


def documented_settings() -> dict[str, str]:
    """setting -> its default cell, from README's configuration table."""
    found = {}
    for name_cell, _, default in table_rows(section(README, "Configuration")):
        for name in re.findall(r"`([A-Z][A-Z_]+)`", name_cell):
            found[name] = default
    return found


def test_the_configuration_table_lists_exactly_the_settings_the_bot_reads():
    read = set(re.findall(r'"([A-Z][A-Z0-9_]+)"', inspect.getsource(settings.Settings.parse)))
    assert read - set(settings.LOG_LEVELS) == set(settings.SETTINGS), "Settings.parse reads what SETTINGS names"
    assert set(documented_settings()) == set(settings.SETTINGS)
    for name, (_, default) in settings.SETTINGS.items():
        if default is not None:
            cell = documented_settings()[name]
            assert f"`{default}`" in cell or f"`{default.split(',')[0]}" in cell, (name, default, cell)


def test_only_settings_reads_the_environment():
    readers = [str(p.relative_to(REPO)) for p in (REPO / "bot").rglob("*.py")
               if re.search(r"os\.environ|getenv\(", p.read_text(encoding="utf-8"))]
    assert readers == ["bot/settings.py"]


def test_env_example_lists_every_setting_with_a_comment_and_the_defaults():
    lines = (REPO / ".env.example").read_text(encoding="utf-8").splitlines()
    values = {}
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            name, _, value = line.partition("=")
            assert lines[i - 1].startswith("#") or "=" in lines[i - 1], f"{name} has no comment"
            values[name] = value
    assert list(values) == list(settings.SETTINGS)  # in the same order
    for name, value in values.items():  # a copied .env.example changes nothing until edited
        assert value in ("", settings.SETTINGS[name][1]), (name, value)


# -- Commands -----------------------------------------------------------------------------------


def shown_commands() -> list[tuple[str, str]]:
    """(file, `flywheel …` command line) for every command the two READMEs show, in code."""
    found = []
    for name, text in (("README.md", README), ("prompts/README.md", PROMPTS_README)):
        blocks = re.findall(r"```\n(.*?)```", text, re.S)
        spans = re.findall(r"`([^`\n]+)`", re.sub(r"```\n.*?```", "", text, flags=re.S))
        for piece in [*(line for block in blocks for line in block.splitlines()), *spans]:
            for match in re.finditer(r"(?<![@\w/.-])flywheel ([a-z][a-z-]*)([^#`]*)", piece.replace("\\|", "|")):
                found.append((name, match.group(0).strip()))
    return found


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_command_and_option_the_docs_show_exists():
    shown = shown_commands()
    assert len(shown) > 30
    commands = subcommands(cli.parser())
    helped = subprocess.run([str(Path(sys.executable).with_name("flywheel")), "--help"], capture_output=True,
                            text=True, timeout=30).stdout
    for where, line in shown:
        name, *rest = (word.strip("`:,.") for word in line.split()[1:])
        assert name in commands and name in helped, f"{where}: `{line}`: no command {name!r} in flywheel --help"
        parser = commands[name]
        if rest and any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            assert rest[0] in subcommands(parser), f"{where}: `{line}`"
            parser = subcommands(parser)[rest[0]]
        options = {o for a in parser._actions for o in a.option_strings}
        for option in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", " ".join(rest)):
            assert option in options, f"{where}: `{line}`: flywheel {name} has no {option}"


# -- Add a prompt -------------------------------------------------------------------------------


def test_the_readmes_standup_example_is_a_valid_prompt_with_its_command(tmp_path: Path):
    example = re.search(r"```\n(---\nname: standup\n.*?)```", section(README, "Add a prompt"), re.S)
    (tmp_path / "standup.prompty").write_text(example.group(1), encoding="utf-8")
    prompts = PromptSet.load(tmp_path)
    assert prompts.problems == [] and prompts.warnings == []
    assert prompts.by_command("/standup").name == "standup"


def test_the_shipped_prompts_table_names_every_shipped_file_and_its_command():
    shipped = PromptSet.load(PROMPTS)
    rows = {re.sub(r"[`]", "", r[0]): re.sub(r"[`]", "", r[1]) for r in table_rows(section(PROMPTS_README,
                                                                                          "Shipped prompts"))}
    assert set(rows) == {f"{name}.prompty" for name in SHIPPED}
    for name in SHIPPED:
        prompt = shipped.get(name) or shipped.helpers[name]
        assert rows[f"{name}.prompty"] == (prompt.command if prompt.slack else "(not in Slack)")


def test_no_doc_asks_for_a_restart_to_load_a_prompt():
    for text in (README, PROMPTS_README):  # tests/test_slack_flow.py: a new file is live at the next message
        for sentence in re.split(r"(?<=[.:])\s", text):
            if "restart" in sentence and "prompt" in sentence.lower():
                assert "no restart" in sentence.lower(), sentence


# -- Datasets -----------------------------------------------------------------------------------


def test_the_csv_row_says_what_the_widest_filters_still_leave_out():
    """tests/test_export.py (errors, truncated, incomplete, excluded and length never appear) is the
    behaviour; the table must say it, not "one row per call"."""
    row = next(r for r in table_rows(section(README, "Datasets and verdicts")) if r[0] == "`csv`")
    assert "--rating any --include-unrated" in row[2] and "one row per call:" not in row[1]
    assert all(word in row[1] for word in ("errors", "truncated", "🚫"))
