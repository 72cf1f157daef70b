"""The report of `flywheel replay`, opened in headless Chromium: its numbers are the --json ones,
the differences show, and logged text is shown as text, never run."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from bot.prompts import PromptSet
from bot.store import CallLog, Store

from conftest import PROMPTS

REPO = Path(__file__).resolve().parents[2]
FLYWHEEL = Path(sys.executable).with_name("flywheel")
HOSTILE = "Why does <script>window.pwned = 1</script> break the page? <img src=x onerror=\"window.pwned=2\">"


async def _seed(url: str) -> None:
    ask = PromptSet.load(PROMPTS).get("ask")
    prompt = {"name": "ask", "version": ask.version, "path": str(ask.path), "source": ask.source, "model": None}
    store = Store(url)
    await store.upgrade()
    try:
        for i, (text, answer) in enumerate([
            (HOSTILE, "Because the <script> tag runs; escape it."),
            ("How do I rotate the API key?", "Open the settings page and click Rotate."),
            ("What does exit code 137 mean?", "The process was killed, usually by the OOM killer."),
        ]):
            call_id = await store.record_call(CallLog(
                trigger="mention", prompt_name="ask", prompt_version=ask.version, model="gpt-4o-mini",
                messages=ask.messages(text, [], date="2026-03-01"), answer=answer, request_text=text,
                channel_id="C1", user_id="U1", finish_reason="stop", prompt_tokens=800, completion_tokens=40,
                cost_usd=0.0002, latency_ms=1500), prompt=prompt)
            if i == 1:
                await store.add_correction(call_id=call_id, user_id="U2", text="Settings → API keys → Rotate.")
            else:
                await store.set_feedback(call_id=call_id, user_id="U3", source="reaction", name="+1", value=1)
    finally:
        await store.close()


def _answer(text: str) -> str:
    found = re.search(r"<answer_a>\n(.*)\n</answer_a>", text, re.S)
    if found:  # the judge: prefers the candidate's answer, wherever it is
        return "Verdict: " + ("A" if found.group(1).startswith("Short:") else "B")
    return f"Short: {text[:40]}"


def test_the_report_shows_the_json_figures_and_the_differences(tmp_path: Path, driver: Any, shot: Any,
                                                                fake_openai: Any) -> None:
    from selenium.webdriver.common.by import By

    url = f"sqlite:///{tmp_path / 'flywheel.db'}"
    asyncio.run(_seed(url))
    candidate = tmp_path / "my-ask.prompty"
    candidate.write_text((PROMPTS / "ask.prompty").read_text().replace(
        '    usage_hint: "[your question]"\n---\n',
        '    usage_hint: "[your question]"\n  checks:\n    - contains: "Short:"\n    - max_length: 50\n---\n'))
    fake_openai.call(functools.partial(fake_openai.fake.default_reply, _answer))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "DATABASE_URL": url,
           "OPENAI_API_KEY": fake_openai.api_key, "OPENAI_BASE_URL": fake_openai.url,
           "FLYWHEEL_MODEL": "gpt-4o-mini", "PROMPTS_DIR": str(PROMPTS)}
    report = tmp_path / "report.html"
    done = subprocess.run([str(FLYWHEEL), "replay", "ask", "--candidate", str(candidate), "--judge", "judge",
                           "--report", str(report), "--json"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert (figures["inputs"], figures["answered"], figures["wins"]) == (3, 3, 3)

    driver.get(report.as_uri())
    shot("report")
    assert driver.title.startswith("Replay of ask")

    def text(element_id: str) -> str:
        return driver.find_element(By.ID, element_id).text

    assert text("win-rate").startswith(f"{figures['win_rate'] * 100:.1f}%")
    assert f"95% CI {figures['win_rate_low'] * 100:.1f}%–{figures['win_rate_high'] * 100:.1f}%" in text("win-rate")
    assert [text(i) for i in ("wins", "ties", "losses", "judged")] == [
        str(figures[k]) for k in ("wins", "ties", "losses", "judged")]
    assert text("checks").startswith(f"{figures['checks_passed']} / {figures['checks_total']}")
    assert text("reference-checks") == str(figures["reference_checks_passed"])
    assert text("cost") == f"${figures['cost_usd']:.4f}" and text("reference-cost") == "$0.0006"
    assert text("latency-p50") == f"{figures['latency_p50_ms']} ms" and text("reference-latency-p50") == "1500 ms"
    assert text("candidate-version") == figures["candidate_version"][:12]

    articles = driver.find_elements(By.TAG_NAME, "article")
    assert len(articles) == 3 and all(a.is_displayed() for a in articles)
    inserted = driver.find_elements(By.CSS_SELECTOR, ".candidate-text ins")
    deleted = driver.find_elements(By.CSS_SELECTOR, ".reference-text del")
    assert inserted and deleted and inserted[0].is_displayed()
    assert inserted[0].value_of_css_property("background-color") != deleted[0].value_of_css_property(
        "background-color")
    assert "Settings → API keys → Rotate." in driver.find_element(By.TAG_NAME, "body").text  # the correction

    # What people wrote is shown as text, never run or loaded.
    requests = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".request .text")]
    assert HOSTILE in requests
    assert driver.find_elements(By.CSS_SELECTOR, "script, img, iframe, link, object, embed") == []
    assert driver.execute_script("return window.pwned === undefined") is True
