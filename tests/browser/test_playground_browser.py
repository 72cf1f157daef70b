"""The Playground in real headless Chromium: `flywheel dev` as a person uses it.

Each test types into the page, clicks what a person clicks, waits on the page's test ids, and
checks what the bot stored with the real CLI (`flywheel stats --json`, `flywheel export`).
Screenshots of each step land in test-artifacts/screenshots/.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

try:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # the dev extra is not installed
    if os.environ.get("FLYWHEEL_TEST_REQUIRE_BROWSER") == "1":
        raise
    pytest.skip("selenium is not installed (pip install -e '.[dev]')", allow_module_level=True)

GENERAL = "C_GENERAL"
HEX12 = re.compile(r"^[0-9a-f]{12}$")
FIRST_ANSWER_WITHIN = 2.0  # seconds from Enter to the answer's first appearance in the thread
COMPLETE_WITHIN = 1.0  # seconds from its first appearance to the complete answer

# Every bot message the page shows in the thread pane, from first sight to complete, timed
# against the last Enter pressed in a composer (performance.now() milliseconds).
OBSERVE = """
window.__fw = {sends: [], seen: {}};
document.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && e.target.matches("textarea")) window.__fw.sends.push(performance.now());
}, true);
const look = () => {
  const now = performance.now();
  const sel = '[data-testid="thread-messages"] > [data-testid="message"][data-user="UBOT"]:not(.thread-parent):not(.ephemeral)';
  for (const el of document.querySelectorAll(sel)) {
    const r = (window.__fw.seen[el.dataset.ts] ||= {first: now, streaming: null, done: null});
    if (el.getAttribute("aria-busy") === "true") r.streaming ??= now;
    else if (el.querySelector('[data-testid="answer-meta"]')) r.done ??= now;
  }
};
new MutationObserver(look).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
"""

# What a list of messages shows, read in one go (no stale elements).
SNAPSHOT = """
const list = document.querySelector(arguments[0]);
if (!list || list.closest("[hidden]")) return null;
return [...list.querySelectorAll(':scope > [data-testid="message"]')].map((el) => ({
  ts: el.dataset.ts,
  user: el.dataset.user,
  parent: el.classList.contains("thread-parent"),
  ephemeral: el.classList.contains("ephemeral"),
  busy: el.getAttribute("aria-busy") === "true",
  text: (el.querySelector('[data-testid="message-text"]')?.textContent || "").trim(),
  shown: el.innerText,
  prompt: el.querySelector(".meta-prompt")?.textContent ?? null,
  version: el.querySelector(".meta-version")?.textContent ?? null,
  full_version: (el.querySelector(".meta-version")?.title || "").split(" ")[2] || null,
  model: el.querySelector(".meta-model")?.textContent ?? null,
  older: !!el.querySelector(".meta-older"),
  echo: !!el.querySelector('[data-testid="echo-badge"]'),
  replies: el.querySelector('[data-testid="reply-count"]')?.textContent ?? null,
}));
"""

MAIN = '[data-testid="messages"]'
THREAD = '[data-testid="thread-messages"]'


class Page:
    """The playground page in the browser, with waits on its test ids."""

    def __init__(self, driver: Any, pg: Any, shot: Callable[[str], Any]):
        self.d = driver
        self.pg = pg
        self.shot = shot

    # -- opening -------------------------------------------------------------------------------

    def open(self) -> Page:
        self.pg.api("reset", {})
        self.d.get(f"{self.pg.url}/?run={time.time_ns()}#/{GENERAL}")  # a new query: a full load
        self.wait(lambda: self.js("return !!document.querySelector('[data-testid=\"messages\"] .intro')"),
                  10, "the page did not load its state")
        self.wait(lambda: self.js("return (window.__fwSockets || []).some((s) => s.readyState === 1)"),
                  10, "the page's live socket did not open")
        self.js(OBSERVE)
        self.d.get_log("browser")  # start the console log afresh
        return self

    # -- reading -------------------------------------------------------------------------------

    def js(self, script: str, *args: Any) -> Any:
        return self.d.execute_script(script, *args)

    def wait(self, condition: Callable[[], Any], timeout: float = 5.0, message: str = "") -> Any:
        def check(_: Any) -> Any:
            return condition()

        return WebDriverWait(self.d, timeout, poll_frequency=0.02,
                             ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
                             ).until(check, message)

    def messages(self, where: str = MAIN) -> list[dict[str, Any]]:
        return self.js(SNAPSHOT, where) or []

    def thread_answers(self) -> list[dict[str, Any]]:
        """The bot's messages in the open thread (not its parent, not ephemeral ones)."""
        return [m for m in self.messages(THREAD) if m["user"] == "UBOT" and not m["parent"] and not m["ephemeral"]]

    def wait_answers(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait for ``n`` complete answers (streaming ended, footer shown) in the open thread."""
        def done() -> list[dict[str, Any]] | None:
            answers = [a for a in self.thread_answers() if not a["busy"] and a["prompt"]]
            return answers if len(answers) >= n else None

        return self.wait(done, timeout, f"{n} complete answer(s) in the thread; saw {self.thread_answers()}")

    def timing(self, ts: str) -> dict[str, float | None]:
        """Seconds from the last Enter to the answer's first sight, streaming and completion."""
        fw = self.js("return window.__fw")
        seen, sent = fw["seen"].get(ts), fw["sends"][-1]
        assert seen, f"the page never showed answer {ts} in the thread"
        return {k: None if seen[k] is None else (seen[k] - sent) / 1000 for k in ("first", "streaming", "done")}

    def text_of(self, where: str) -> str:
        return self.d.find_element(By.CSS_SELECTOR, where).text

    # -- acting --------------------------------------------------------------------------------

    def el(self, css: str) -> Any:
        return self.wait(lambda: self.d.find_element(By.CSS_SELECTOR, css), 5, f"no element {css}")

    def send(self, composer: str, text: str) -> None:
        """Type into ``composer`` (a data-testid) like a person, and press Enter."""
        box = self.el(f'[data-testid="{composer}"]')
        box.click()
        box.send_keys(text)
        box.send_keys(Keys.ENTER)

    def click(self, css: str) -> None:
        self.wait(lambda: self.d.find_element(By.CSS_SELECTOR, css).click() or True, 5, f"could not click {css}")

    def hover_click(self, message_css: str, button_css: str) -> None:
        """Hover a message (its toolbar shows on hover), then click a button of the toolbar."""
        def go() -> bool:
            msg = self.d.find_element(By.CSS_SELECTOR, message_css)
            ActionChains(self.d).move_to_element(msg).perform()
            button = msg.find_element(By.CSS_SELECTOR, button_css)
            ActionChains(self.d).move_to_element(button).click().perform()
            return True

        self.wait(go, 5, f"could not hover {message_css} and click {button_css}")

    def mention(self, question: str) -> dict[str, Any]:
        """``@flywheel <question>`` in #general; the thread opens with the bot's complete answer."""
        self.send("composer", f"@flywheel {question}")
        self.wait(lambda: self.js("return !document.querySelector('[data-testid=\"thread\"]').hidden"), 5,
                  "the thread did not open when the bot answered")
        [answer] = self.wait_answers(1)
        return answer

    # -- checks --------------------------------------------------------------------------------

    def assert_clean(self) -> None:
        """No error banner on the page and no error in the browser's console."""
        banners = [b.text for b in self.d.find_elements(By.CSS_SELECTOR, '[data-testid="banner"]')]
        assert not banners, f"the page shows error banners: {banners}"
        errors = [e for e in self.d.get_log("browser") if e.get("level") == "SEVERE"]
        assert not errors, f"browser console errors: {errors}"


@pytest.fixture
def browse(request: pytest.FixtureRequest, driver: Any, shot: Callable[[str], Any]) -> Iterator[Callable[[Any], Page]]:
    """``browse(playground)``: the page of that playground, opened afresh on cleared messages.

    When the test fails, the server's log and the browser's console are printed with it.
    """
    opened: list[Page] = []

    def open_page(pg: Any) -> Page:
        opened.append(Page(driver, pg, shot))
        return opened[-1].open()

    yield open_page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for p in opened:
            print(f"--- flywheel dev log ({p.pg.url}) ---\n{p.pg.log_text()[-4000:]}")
        print(f"--- browser console ---\n{driver.get_log('browser')}")


@pytest.fixture
def page(browse: Callable[[Any], Page], playground: Any) -> Iterator[Page]:
    yield browse(playground)


def ask_version(pg: Any) -> str:
    return hashlib.sha256((pg.prompts / "ask.prompty").read_bytes()).hexdigest()


def state_text(pg: Any, ts: str) -> str:
    """A message's text as the stand-in stored it (Slack escapes undone)."""
    state = pg.api("state")
    [m] = [m for m in state["messages"][GENERAL] if m["ts"] == ts]
    return html.unescape(m["text"])


def exported_exchange(lines: list[dict[str, Any]], question: str) -> list[dict[str, Any]]:
    found = [line["messages"] for line in lines
             if any(m["role"] == "user" and question in m["content"] for m in line["messages"])]
    assert len(found) == 1, f"expected one exported exchange asking {question!r}, found {len(found)}: {lines}"
    return found[0]


# -- the tests --------------------------------------------------------------------------------


def test_a_mention_is_answered_in_its_thread_streaming_by_the_labelled_echo_model(page: Page):
    assert page.text_of("#model-pill") == "Model: echo (offline)"
    page.shot("opened")
    page.send("composer", "@flywheel what is a vector database?")

    page.wait(lambda: page.thread_answers(), FIRST_ANSWER_WITHIN + 1, "no answer appeared in the thread")
    page.shot("answering")
    [answer] = page.wait_answers(1)
    page.shot("answered")
    t = page.timing(answer["ts"])
    print(f"echo answer, seconds after Enter: {t}")
    assert t["first"] is not None and t["first"] < FIRST_ANSWER_WITHIN, f"first sight too late: {t}"
    assert t["streaming"] is not None, f"the answer was never shown streaming: {t}"
    assert t["done"] is not None and t["done"] - t["first"] < COMPLETE_WITHIN, f"completed too late: {t}"

    assert answer["echo"], "the echo model's answer must carry the echo badge"
    assert answer["prompt"] == "ask" and HEX12.match(answer["version"]), answer
    assert answer["version"] == ask_version(page.pg)[:12] and answer["model"] == "echo"
    assert "Echo model (offline)." in answer["text"] and "what is a vector database?" in answer["text"]
    # The question stays in the channel with its reply count; the answer is in the thread.
    [question] = page.messages(MAIN)
    assert question["user"] == "U_YOU" and "what is a vector database?" in question["text"]
    assert question["replies"] == "1 reply"
    page.assert_clean()


def test_a_thumbs_up_counts_in_stats_and_the_exchange_is_exported(page: Page):
    answer = page.mention("how do embeddings work?")
    ts = answer["ts"]
    in_thread = f'{THREAD} > [data-ts="{ts}"]'

    page.click(f'{in_thread} [data-testid="action-vote-up"]')
    query = ("SELECT f.source, f.value FROM feedback f JOIN calls c ON c.id = f.call_id "
             "WHERE c.reply_ts = ? AND f.removed_at IS NULL")
    page.wait(lambda: page.pg.sql(query, ts) == [("button", 1)], 5, "the bot did not store the 👍 button")
    ack = page.wait(lambda: next((m for m in page.messages(THREAD) if m["ephemeral"]), None), 5,
                    "the 👍 button vote was not acknowledged")
    assert "Your vote on this answer: 👍" in ack["text"] and ack["user"] == "UBOT"
    page.hover_click(in_thread, '[data-testid="react-+1"]')
    page.wait(lambda: page.js(
        "const c = document.querySelector(arguments[0]); return c && c.getAttribute('aria-pressed') === 'true'"
        " && c.textContent.includes('1')", f'{in_thread} [data-testid="reaction-+1"]'),
        5, "the 👍 reaction did not show on the answer")
    # One vote per person: the reaction replaces the button vote, and the page shows it once.
    page.wait(lambda: page.js("return document.querySelector(arguments[0]).getAttribute('aria-pressed')",
                              f'{in_thread} [data-testid="action-vote-up"]') == "false", 5,
              "the 👍 button still shows pressed beside the 👍 reaction")
    page.shot("voted")
    page.wait(lambda: page.pg.sql(query, ts) == [("reaction", 1)], 5, "the reaction did not replace the button")

    assert page.pg.stats_and_export("openai-chat") == ([], []), "practice is not data: not counted by default"
    stats, export = page.pg.stats_and_export("openai-chat", "--source", "playground")
    [row] = [r for r in stats if r["prompt"] == "ask" and r["version"].startswith(answer["version"])]
    assert row["up"] == 1 and row["down"] == 0 and row["rated"] == 1, row  # one person, one vote
    messages = exported_exchange(export, "how do embeddings work?")
    assert messages[-1] == {"role": "assistant", "content": state_text(page.pg, ts)}
    assert "how do embeddings work?" in messages[-1]["content"]
    page.assert_clean()


def test_slash_commands_answer_in_a_thread_or_show_their_usage_privately(page: Page):
    page.send("composer", "/ask how do I undo the last git commit?")
    root = page.wait(lambda: next((m for m in page.messages(MAIN) if "asked /ask" in m["text"] and m["replies"]),
                                  None), 5, "no 'asked /ask' message with a reply in the channel")
    assert root["user"] == "UBOT" and "how do I undo the last git commit?" in root["text"]
    # The thread opens by itself, as after a mention: that is where the answer is.
    page.wait(lambda: page.js("return !document.querySelector('[data-testid=\"thread\"]').hidden"), 5,
              "the thread did not open when the bot answered the command")
    [answer] = page.wait_answers(1)
    assert answer["prompt"] == "ask" and answer["echo"]
    assert "how do I undo the last git commit?" in answer["text"]
    page.shot("answered")

    before = len(page.pg.api("state")["messages"][GENERAL])
    calls = page.pg.sql("SELECT count(*) FROM calls")
    page.send("composer", "/summarize")
    hint = page.wait(lambda: next((m for m in page.messages(MAIN) if m["ephemeral"]), None), 5,
                     "no usage hint for /summarize")
    assert "Only visible to you" in hint["shown"] and "Usage: /summarize" in hint["text"], hint
    page.shot("usage-hint")
    # No answer follows: nothing new in the channel, no model call, for a while.
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        assert [m["ts"] for m in page.messages(MAIN) if not m["ephemeral"]] == [root["ts"]]
        time.sleep(0.05)
    assert len(page.pg.api("state")["messages"][GENERAL]) == before
    assert page.pg.sql("SELECT count(*) FROM calls") == calls

    # Slack runs no app's command in a thread: it says so, privately, and nothing fails.
    page.send("thread-composer", "/ask again please")
    said = page.wait(lambda: next((m for m in page.messages(THREAD) if m["ephemeral"] and m["user"] == "USLACKBOT"),
                                  None), 5, "Slackbot did not say that commands do not run in threads")
    assert "/ask is not supported in threads" in said["text"] and "Slackbot" in said["shown"]
    page.shot("command-in-thread")
    assert page.pg.sql("SELECT count(*) FROM calls") == calls
    page.assert_clean()


def test_the_pressed_feedback_button_is_the_stored_vote_also_after_a_reload(page: Page):
    answer = page.mention("what is a vector index?")
    ts = answer["ts"]
    in_thread = f'{THREAD} > [data-ts="{ts}"]'
    up = f'{in_thread} [data-testid="action-vote-up"]'
    query = ("SELECT f.source, f.value FROM feedback f JOIN calls c ON c.id = f.call_id "
             "WHERE c.reply_ts = ? AND f.removed_at IS NULL")

    def pressed() -> str:
        return page.js("return document.querySelector(arguments[0]).getAttribute('aria-pressed')", up)

    page.click(up)
    page.wait(lambda: page.pg.sql(query, ts) == [("button", 1)], 5, "the bot did not store the 👍 button")
    page.hover_click(in_thread, '[data-testid="react--1"]')
    page.wait(lambda: page.pg.sql(query, ts) == [("reaction", -1)], 5, "the 👎 reaction did not replace the 👍")
    assert pressed() == "false", "the page shows the 👍 button beside the 👎 that is recorded"
    page.click(f'{in_thread} [data-testid="reaction--1"]')  # take the 👎 back: nothing is left, nothing shows
    page.wait(lambda: page.pg.sql(query, ts) == [], 5, "removing the 👎 did not withdraw the vote")
    assert pressed() == "false"

    page.click(up)
    page.wait(lambda: page.pg.sql(query, ts) == [("button", 1)], 5, "the bot did not store the 👍 button")
    page.d.get(f"{page.pg.url}/?run={time.time_ns()}#/{GENERAL}")  # reload
    page.wait(lambda: page.js("return !!document.querySelector(arguments[0])", f'{MAIN} [data-ts="{answer["ts"]}"],'
                              f' {MAIN} [data-testid="reply-count"]'), 10, "the page did not load again")
    page.click(f'{MAIN} [data-testid="reply-count"]')
    page.wait(lambda: pressed() == "true", 5, "after a reload the 👍 button vote left no trace")
    page.shot("reloaded")
    page.assert_clean()


def test_a_follow_up_in_the_thread_needs_no_mention(page: Page):
    first = page.mention("which index does pgvector use?")
    assert "earlier message" not in first["text"]

    page.send("thread-composer", "and which one builds faster?")
    first_ts = first["ts"]
    answers = page.wait_answers(2)
    page.shot("follow-up-answered")
    assert answers[0]["ts"] == first_ts
    follow_up = answers[1]
    assert "and which one builds faster?" in follow_up["text"]
    assert "2 earlier messages of the conversation" in follow_up["text"], follow_up["text"]
    assert follow_up["prompt"] == "ask" and follow_up["echo"]
    mine = [m for m in page.messages(THREAD) if m["user"] == "U_YOU" and not m["parent"]]
    assert [m["text"] for m in mine] == ["and which one builds faster?"]
    [root] = page.messages(MAIN)
    page.wait(lambda: page.messages(MAIN)[0]["replies"] == "3 replies", 5, "the channel shows 3 replies")
    assert root["user"] == "U_YOU"
    page.assert_clean()


def test_fix_it_saves_a_correction_that_becomes_the_training_target(page: Page):
    answer = page.mention("what does HNSW stand for?")
    in_thread = f'{THREAD} > [data-ts="{answer["ts"]}"]'
    original = state_text(page.pg, answer["ts"])

    page.click(f'{in_thread} [data-testid="action-fix"]')
    field = page.wait(lambda: page.js("return document.querySelector('[data-testid=\"modal\"]').open")
                      and page.d.find_element(By.CSS_SELECTOR, '[data-testid="modal"] [data-testid^="block-"]'),
                      5, "the Fix it modal did not open")
    assert field.get_attribute("value") == original  # prefilled with the answer
    page.shot("modal-open")

    correction = "HNSW stands for Hierarchical Navigable Small World.\nIt is a graph index for nearest-neighbour search."
    field.clear()
    field.send_keys(correction)
    page.shot("modal-corrected")
    page.click('[data-testid="modal-submit"]')
    page.wait(lambda: not page.js("return document.querySelector('[data-testid=\"modal\"]').open"), 5,
              "the modal did not close after saving")
    note = page.wait(lambda: next((m for m in page.messages(THREAD) if "corrected this answer" in m["text"]), None),
                     5, "no 'corrected this answer' note in the thread")
    # "this answer" links to it: the page opens it and points it out, without leaving.
    link = page.el(f'{THREAD} > [data-ts="{note["ts"]}"] [data-testid="message-text"] a')
    assert link.text == "this answer" and "/archives/C_GENERAL/p" in link.get_attribute("href")
    page.js("document.querySelector(arguments[0]).scrollTop = 0", THREAD)
    link.click()
    page.wait(lambda: page.js("return !!document.querySelector(arguments[0])", f'{in_thread}.linked'), 3,
              "the link did not point out the corrected answer")
    assert "/archives/" not in page.d.current_url and len(page.d.window_handles) == 1
    assert note["user"] == "UBOT"
    page.shot("corrected")

    messages = exported_exchange(page.pg.export("openai-chat"), "what does HNSW stand for?")
    assert messages[-1] == {"role": "assistant", "content": correction}
    page.assert_clean()


def test_editing_a_prompt_file_changes_the_next_answers_version(page: Page):
    old = ask_version(page.pg)
    first = page.mention("what is prompt versioning?")
    assert first["version"] == old[:12]

    path = page.pg.prompts / "ask.prompty"
    source = path.read_text()
    assert source.count("\n\nuser:\n") == 1
    path.write_text(source.replace("\n\nuser:\n", "\nAlways answer in British English.\n\nuser:\n"))
    new = ask_version(page.pg)
    assert new[:12] != old[:12]
    page.wait(lambda: f"ask → {new[:12]}" in (page.js("return document.querySelector('#toast').textContent") or ""),
              5, "the page did not announce the reloaded prompt")
    page.shot("reloaded")

    page.click("#thread-close")
    page.wait(lambda: page.js("return document.querySelector('[data-testid=\"thread\"]').hidden"), 5)
    second = page.mention("what is prompt versioning, again?")
    page.shot("new-version")
    assert second["version"] == new[:12] and second["full_version"] == new
    assert not second["older"]

    # The first answer now says the prompt file has changed since.
    first_root = page.messages(MAIN)[0]
    page.click("#thread-close")
    page.click(f'{MAIN} > [data-ts="{first_root["ts"]}"] [data-testid="reply-count"]')
    [again] = page.wait_answers(1)
    assert again["ts"] == first["ts"] and again["version"] == old[:12] and again["older"]
    page.shot("older-version")
    page.assert_clean()


def test_a_configured_model_answers_instead_of_echo(browse: Callable[[Any], Page], model_playground: Any,
                                                    fake_openai: Any):
    page = browse(model_playground)
    assert page.text_of("#model-pill") == "Model: gpt-4o-mini"
    scripted = "Vector databases index embeddings so the nearest neighbours of a query come back fast."
    fake_openai.reply(scripted, chunk_delay=0.02)
    asked = len(fake_openai.requests())

    answer = page.mention("what is a vector database?")
    page.shot("answered")
    assert answer["text"] == scripted
    assert not answer["echo"] and not page.d.find_elements(By.CSS_SELECTOR, '[data-testid="echo-badge"]')
    assert answer["prompt"] == "ask" and answer["model"] == "gpt-4o-mini" and HEX12.match(answer["version"])
    assert page.timing(answer["ts"])["streaming"] is not None, "the answer was never shown streaming"
    requests = fake_openai.requests()[asked:]
    assert len(requests) == 1 and requests[0]["model"] == "gpt-4o-mini"
    assert requests[0]["messages"][-1] == {"role": "user", "content": "what is a vector database?"}
    page.assert_clean()


PANE = '[data-testid="assistant-messages"]'


def test_the_assistant_pane_suggests_answers_and_follows_the_channel(page: Page):
    """Slack's assistant pane: open it from #general, click a suggestion, see the answer and title."""
    page.click('[data-testid="open-assistant"]')
    suggestion = '[data-testid="assistant-suggestion"]'
    page.wait(lambda: page.d.find_elements(By.CSS_SELECTOR, suggestion), 5, "the pane shows no suggested prompts")
    assert page.text_of('[data-testid="assistant-title"]') == "New chat"
    assert page.text_of('[data-testid="assistant-context"]') == "Context: #general"
    first = page.d.find_elements(By.CSS_SELECTOR, suggestion)[0]
    assert first.text == "Summarise this channel"  # offered because the pane was opened from a channel
    page.shot("pane-opened")

    first.click()

    def answered() -> list[dict[str, Any]] | None:
        done = [m for m in page.messages(PANE) if m["user"] == "UBOT" and not m["busy"] and m["prompt"]]
        return done or None

    [answer] = page.wait(answered, 5, f"no answer in the pane; saw {page.messages(PANE)}")
    assert answer["prompt"] == "summarize" and answer["echo"]
    # The streamed answer, with the note that says which channel it read under it.
    assert answer["text"].startswith("Echo model (offline). You wrote:"), answer
    assert answer["text"].endswith("most recent messages of #general for this answer."), answer
    mine = [m for m in page.messages(PANE) if m["user"] == "U_YOU"]
    assert [m["text"] for m in mine] == ["summarize the recent messages of this channel"]
    page.wait(lambda: page.text_of('[data-testid="assistant-title"]') == "summarize the recent messages of this channel",
              5, "the pane did not show the title the bot set")
    assert page.d.find_element(By.CSS_SELECTOR, '[data-testid="assistant-status"]').get_attribute("hidden") is not None
    calls = "SELECT trigger, source, prompt_name FROM calls WHERE reply_ts = ?"
    page.wait(lambda: page.pg.sql(calls, answer["ts"]) == [("assistant", "playground", "summarize")], 5,
              f"the call row: {page.pg.sql(calls, answer['ts'])}")

    # The feedback buttons work in the pane as elsewhere.
    page.click(f'{PANE} > [data-ts="{answer["ts"]}"] [data-testid="action-vote-up"]')
    query = "SELECT f.value FROM feedback f JOIN calls c ON c.id = f.call_id WHERE c.reply_ts = ?"
    page.wait(lambda: page.pg.sql(query, answer["ts"]) == [(1,)], 5, "the 👍 in the pane was not stored")

    # Switching channel with the pane open: the bot hears the new context; the pane stays.
    page.click('[data-testid="channel-C_RANDOM"]')
    page.wait(lambda: page.text_of('[data-testid="assistant-context"]') == "Context: #random", 5,
              "the pane did not follow the channel")
    assert answer["ts"] in [m["ts"] for m in page.messages(PANE)]
    page.shot("pane-answered")
    page.click("#assistant-close")
    assert page.js("return document.querySelector('[data-testid=\"assistant\"]').hidden")
    page.assert_clean()
