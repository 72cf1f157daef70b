"""`flywheel replay`: a candidate prompt on real logged inputs, scored against their references."""

from __future__ import annotations

import shutil
from pathlib import Path

from bot.prompts import PromptSet, load_file

from conftest import REPO

SKILLS = ["ask", "explain", "review", "rewrite", "summarize"]


# -- the judge is a prompt file, but not a Slack skill ---------------------------------------------


def test_the_shipped_judge_loads_but_is_no_skill() -> None:
    shipped = PromptSet.load(REPO / "prompts")
    assert shipped.problems == []
    assert list(shipped.prompts) == SKILLS and list(shipped.helpers) == ["judge"]
    assert shipped.get("judge") is None and shipped.by_command("/judge") is None
    assert shipped.route("judge this: A or B?")[0].name == "ask"  # a mention naming it goes to ask
    assert "judge" not in {p.name for p in shipped}


def test_slack_false_keeps_any_prompt_out_of_slack(tmp_path: Path) -> None:
    (tmp_path / "helper.prompty").write_text("---\nname: helper\nmetadata:\n  slack: false\n---\nuser:\n{{ text }}\n")
    (tmp_path / "skill.prompty").write_text("---\nname: skill\nmetadata:\n  slack: {}\n---\nuser:\n{{ text }}\n")
    prompts = PromptSet.load(tmp_path)
    assert list(prompts.prompts) == ["skill"] and list(prompts.helpers) == ["helper"]
    assert prompts.helpers["helper"].slack is False and prompts.get("skill").slack is True


def test_a_candidate_file_may_be_named_otherwise(tmp_path: Path) -> None:
    copy = tmp_path / "my-ask.prompty"
    shutil.copy(REPO / "prompts" / "ask.prompty", copy)
    prompt, problems = load_file(copy, name="ask")
    assert problems == [] and prompt is not None and prompt.name == "ask" and prompt.path == copy
    prompt, problems = load_file(copy, name="summarize")
    assert prompt is None
    assert [str(p) for p in problems] == [
        f"{copy}:2: name: must equal the prompt it stands in for 'summarize', got 'ask'"]
