"""bot/slack_text.py: mention stripping, escaping, splitting, previews."""

from __future__ import annotations

import doctest
import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot import slack_text
from bot.slack_text import (
    WORD_JOINER,
    MessageSplitter,
    Piece,
    escape,
    mentions,
    quote,
    split_text,
    strip_mention,
    truncate,
    unescape,
)

WJ = WORD_JOINER
UNDEFUSED = re.compile(r"(?<!\w)@(?:here|channel|everyone)", re.IGNORECASE)
KEPT = re.compile(r"<(?:@[UW][A-Z0-9]+|#C[A-Z0-9]+)(?:\|[^\s<>|]*)?>")


def test_docstring_examples():
    assert doctest.testmod(slack_text).failed == 0


# --- strip_mention / mentions -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<@UBOT> summarize this", "summarize this"),
        ("<@UBOT|flywheel> summarize this", "summarize this"),
        ("<@UBOT>summarize", "summarize"),
        ("hey <@UBOT>, can you help", "hey, can you help"),
        ("<@UBOT> ask <@U999> and <@UBOT|fw> about it", "ask <@U999> and about it"),
        ("<@UBOT> <@UBOT>   twice", "twice"),
        ("thanks <@UBOT>", "thanks"),
        ("first line\n<@UBOT> second\n  indented", "first line\nsecond\n  indented"),
        ("  <@UBOT>  ", ""),
        ("no mention here", "no mention here"),
        ("<@UBOTX> is someone else", "<@UBOTX> is someone else"),
    ],
)
def test_strip_mention(text, expected):
    assert strip_mention(text, "UBOT") == expected


def test_strip_mention_keeps_escaped_literal_and_other_users():
    assert strip_mention("&lt;@UBOT&gt; and <@U2|ann>", "UBOT") == "&lt;@UBOT&gt; and <@U2|ann>"


def test_mentions():
    assert mentions("hi <@U12>", "U12")
    assert mentions("hi <@U12|ann>!", "U12")
    assert not mentions("hi <@U123>", "U12")
    assert not mentions("hi @U12", "U12")
    assert not mentions("hi <@U12>", "")


# --- escape / unescape ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<!channel>", "&lt;!channel&gt;"),
        ("<!here> now", "&lt;!here&gt; now"),
        ("<!everyone>", "&lt;!everyone&gt;"),
        ("<!here|here>", "&lt;!here|here&gt;"),
        ("<!subteam^S1|@team>", "&lt;!subteam^S1|@team&gt;"),
        ("<https://evil|https://good>", "&lt;https://evil|https://good&gt;"),
        ("<mailto:a@b.c|x>", "&lt;mailto:a@b.c|x&gt;"),
        ("a < b > c", "a &lt; b &gt; c"),
        ("AT&T", "AT&amp;T"),
        ("&lt;!channel&gt;", "&amp;lt;!channel&amp;gt;"),
        ("&amp;", "&amp;amp;"),
    ],
)
def test_escape_neutralises_control_text(text, expected):
    assert escape(text) == expected


@pytest.mark.parametrize(
    "token",
    ["<@U123ABC>", "<@W123>", "<@U123ABC|ann>", "<#C123>", "<#C123|general>", "<@U1|>"],
)
def test_escape_keeps_well_formed_mentions_and_channel_links(token):
    assert escape(f"ask {token} please") == f"ask {token} please"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<@u123>", "&lt;@u123&gt;"),  # ids are upper case
        ("<@U123 >", "&lt;@U123 &gt;"),
        ("<@U1|two words>", "&lt;@U1|two words&gt;"),
        ("<@S123>", "&lt;@S123&gt;"),
        ("<#D123>", "&lt;#D123&gt;"),
        ("<@U1|<!here>>", "&lt;@U1|&lt;!here&gt;&gt;"),
        ("<<@U1>>", "&lt;<@U1>&gt;"),
    ],
)
def test_escape_escapes_malformed_tokens(text, expected):
    assert escape(text) == expected


def test_escape_ampersand_in_kept_label_is_escaped():
    assert escape("<#C1|r&d>") == "<#C1|r&amp;d>"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@here look", f"@{WJ}here look"),
        ("hi @channel", f"hi @{WJ}channel"),
        ("@EVERYONE!", f"@{WJ}EVERYONE!"),
        ("(@Here)", f"(@{WJ}Here)"),
        ("@heretofore", f"@{WJ}heretofore"),  # defused even if it is a longer word
        ("<@here>", f"&lt;@{WJ}here&gt;"),
        ("ops@channel.io", "ops@channel.io"),  # not a word start: e-mail addresses stay intact
        ("@hero", "@hero"),
    ],
)
def test_escape_defuses_literal_broadcasts(text, expected):
    assert escape(text) == expected


def test_unescape():
    assert unescape("a &amp; b &lt;c&gt; <@U1>") == "a & b <c> <@U1>"
    assert unescape("&amp;lt;") == "&lt;"  # one level only
    assert unescape("&quot; &nbsp;") == "&quot; &nbsp;"
    assert unescape(escape("x < y && <@U1> <!here>")) == "x < y && <@U1> <!here>"


# --- truncate / quote -------------------------------------------------------------------


def test_truncate():
    assert truncate("short", 10) == "short"
    assert truncate("deploy the new billing service", 18) == "deploy the new…"
    assert truncate("abcdefghijklmnopqrstuvwxyz", 10) == "abcdefghi…"
    assert truncate("word " * 10, 12, marker="...") == "word word..."
    assert truncate("anything", 0) == ""
    assert truncate("anything", 1) == "…"
    # never inside an entity or a kept mention
    assert truncate("a &amp; b", 5) == "a…"
    assert truncate("x<@U123456>y", 8) == "x…"


@given(st.text(max_size=200), st.integers(0, 60))
@settings(max_examples=200, deadline=None)
def test_truncate_bounds(text, limit):
    out = truncate(text, limit)
    assert len(out) <= limit
    if len(text) <= limit:
        assert out == text
    elif limit > 1:
        assert out.endswith("…")
        assert text.startswith(out[:-1].rstrip())


def test_quote():
    assert quote("summarize <!channel> @here\nthanks") == f"> summarize &lt;!channel&gt; @{WJ}here\n> thanks"
    assert quote("") == ""
    assert quote(" \n\t ") == ""
    assert quote("\n\n  hello  \n") == "> hello"


def test_quote_truncates_within_limit_counting_prefixes():
    text = "line one\n" * 50
    out = quote(text, limit=60)
    assert len(out) <= 60
    assert out.endswith("…")
    assert all(line.startswith("> ") for line in out.split("\n"))
    long = quote("a & b " * 200, limit=100)
    assert len(long) <= 100
    assert re.fullmatch(r"> (a &amp; b )*(a|a &amp;|a &amp; b)?…", long), long


@given(st.text(max_size=400), st.integers(3, 300))
@settings(max_examples=150, deadline=None)
def test_quote_bounds(text, limit):
    out = quote(text, limit)
    assert len(out) <= limit
    assert "<!" not in out
    assert not UNDEFUSED.search(out)
    if out:
        assert all(line.startswith("> ") for line in out.split("\n"))


# --- splitter helpers -------------------------------------------------------------------


def fence_lines(text: str) -> int:
    return sum(1 for line in text.split("\n") if line.startswith("```"))


def stream(text: str, limit: int, sizes) -> tuple[list[Piece], MessageSplitter]:
    splitter = MessageSplitter(limit)
    pieces: list[Piece] = []
    i = 0
    for size in sizes:
        pieces += splitter.feed(text[i : i + size])
        i += size
    pieces += splitter.feed(text[i:])
    pieces += splitter.close()
    return pieces, splitter


def group(pieces: list[Piece]) -> list[str]:
    messages: list[str] = []
    for piece in pieces:
        if piece.new_message or not messages:
            messages.append("")
        messages[-1] += piece.text
    return messages


def open_fence(content: str) -> str | None:
    """The fence line that opened the block still open at the end of ``content``."""
    opening = None
    for line in content.split("\n"):
        if line.startswith("```"):
            opening = line if opening is None else None
    return opening


def reassemble(messages: list[str], expected: str) -> str:
    """Remove the fences the splitter re-inserted at message breaks (checking what they say)."""
    unclosed = fence_lines(expected) % 2 == 1
    out, reopened = [], False
    for i, message in enumerate(messages):
        if reopened:
            first, newline, message = message.partition("\n")
            opening = open_fence("".join(out))
            assert newline and opening, messages
            # the same language again; very long info strings fall back to a bare fence
            assert first == opening or (first == "```" and len(opening) > 50), (first, opening)
        last = i == len(messages) - 1
        reopened = message.endswith("\n```") and (not last or unclosed)
        if reopened:
            message = message[:-4]
        out.append(message)
    return "".join(out)


def check_messages(messages: list[str], text: str, limit: int) -> None:
    expected = escape(text)
    for message in messages:
        assert 0 < len(message) <= limit
        assert "<!" not in message and "<http" not in message
        assert not UNDEFUSED.search(message), message
        assert fence_lines(message) % 2 == 0, message
        assert not KEPT.sub("", message).count("<")
    content = reassemble(messages, expected)
    # Whitespace left after the last break may be dropped; nothing else may change.
    assert content == expected or (expected.startswith(content) and expected[len(content) :].isspace())


# --- splitter: unit tests ---------------------------------------------------------------


def test_splitter_holds_back_partial_words():
    s = MessageSplitter(limit=200)
    assert s.feed("Ping @he") == [Piece("Ping ")]
    assert s.feed("re and <!chan") == [Piece(f"@{WJ}here and ")]
    assert s.feed("nel>") == []
    assert s.feed(" done") == [Piece("&lt;!channel&gt; ")]
    assert s.close() == [Piece("done")]
    assert s.text == f"Ping @{WJ}here and &lt;!channel&gt; done"
    assert s.messages == [s.text]


def test_splitter_empty_and_lifecycle():
    s = MessageSplitter()
    assert s.feed("") == []
    assert s.close() == []
    assert s.close() == []
    assert s.text == "" and s.messages == []
    with pytest.raises(RuntimeError):
        s.feed("late")
    with pytest.raises(ValueError):
        MessageSplitter(limit=199)
    assert split_text("", 200) == []


def test_splitter_merges_tiny_deltas_without_empty_pieces():
    text = "one two three four five six seven eight nine ten " * 20
    pieces, splitter = stream(text, 200, [1] * len(text))
    assert all(p.text for p in pieces)
    assert pieces[0].new_message is False
    assert group(pieces) == splitter.messages == split_text(text, 200)
    check_messages(splitter.messages, text, 200)


def test_break_prefers_blank_line_then_newline_then_space():
    limit = 200  # the break is chosen within the last 50 characters of a message
    para = "a" * 160 + "\n\n" + "b b b\nc c " * 10
    assert split_text(para, limit)[0] == "a" * 160 + "\n\n"
    line = "a" * 160 + "\n" + "b b b " * 20
    assert split_text(line, limit)[0] == "a" * 160 + "\n"
    words = "a" * 160 + " " + "b" * 10 + " " + "c" * 60
    assert split_text(words, limit)[0] == "a" * 160 + " " + "b" * 10 + " "
    # a paragraph break earlier than that is not worth a short message
    early = "a" * 100 + "\n\n" + "b " * 100
    assert len(split_text(early, limit)[0]) >= 150


def test_break_never_splits_tokens_or_entities():
    text = "x" * 190 + " <@U123ABC|ann> &&&& " * 30
    for message in split_text(text, 200):
        assert not re.search(r"&(?!amp;|lt;|gt;)", message), message
        assert message.count("<") == message.count(">")


def test_hard_cut_of_30000_char_word():
    word = "x" * 30_000
    messages = split_text(word, 3_900)
    assert [len(m) for m in messages] == [3_900] * 7 + [2_700]
    assert "".join(messages) == word
    pieces, splitter = stream(word, 3_900, [7] * 5_000)
    assert splitter.messages == messages and group(pieces) == messages
    # streamed: a long word is released in slices, not all at close()
    s = MessageSplitter(3_900)
    released = sum(len(p.text) for p in s.feed(word[:20_000]))
    assert released > 10_000


def test_hard_cut_keeps_entities_whole():
    word = "a&" * 15_000  # escapes to 30,000 "a&amp;" pairs
    messages = split_text(word, 3_900)
    assert all(len(m) <= 3_900 and re.fullmatch(r"(a|&amp;)+", m) for m in messages)
    assert "".join(messages) == escape(word)


def test_hard_cut_does_not_start_a_message_with_a_broadcast():
    word = ("x@here" * 2_000) + " " + ("y@channel" * 2_000)
    messages = split_text(word, 3_900)
    check_messages(messages, word, 3_900)
    assert all(not m.startswith("@") for m in messages)


def test_fence_reopened_with_its_language():
    text = "Here you go:\n\n```python\n" + "print('hello')\n" * 40 + "```\n\nThat's all."
    messages = split_text(text, 300)
    assert len(messages) >= 3
    assert messages[0].startswith("Here you go:")
    assert messages[0].endswith("\n```")
    for message in messages[1:-1]:
        assert message.startswith("```python\n") and message.endswith("\n```")
    assert messages[-1].startswith("```python\n")
    assert messages[-1].endswith("That's all.")
    check_messages(messages, text, 300)


def test_fence_reopened_while_streaming():
    text = "```js\n" + "let x = 1;\n" * 60 + "```\n"
    pieces, splitter = stream(text, 200, [3] * 300)
    starts = [p for p in pieces if p.new_message]
    assert starts and all(p.text.startswith("```js\n") for p in starts)
    check_messages(splitter.messages, text, 200)


def test_unclosed_fence_is_closed_at_the_end():
    assert split_text("```sh\nls -la", 200) == ["```sh\nls -la\n```"]


def test_fence_in_mid_line_is_not_a_fence():
    text = "use ``` to open a block " * 40
    messages = split_text(text, 200)
    assert len(messages) > 1 and all(fence_lines(m) == 0 for m in messages)
    check_messages(messages, text, 200)


def test_trailing_whitespace_does_not_make_a_message():
    text = "a" * 195 + "\n" + "\n" * 80
    assert split_text(text, 200) == ["a" * 195 + "\n\n\n\n\n"]
    pieces, _ = stream(text, 200, [1] * 300)
    assert all(p.text.strip() for p in pieces if p.new_message)


def long_answer(n: int = 50_000) -> str:
    parts, i = [], 0
    while sum(map(len, parts)) < n:
        i += 1
        parts.append(f"## Part {i}\n\nSome prose with <!here>, @channel, a & b and <@U123ABC>. " * 3 + "\n\n")
        if i % 3 == 0:
            lang = ("python", "sql", "")[(i // 3) % 3]
            parts.append(
                f"```{lang}\n" + "".join(f"row_{j} = {j}  # x < y\n" for j in range(120)) + "```\n\n"
            )
        if i % 7 == 0:
            parts.append("z" * 5_000 + "\n")
    return "".join(parts)


@pytest.mark.parametrize("limit", [12_000, 3_900])
def test_50k_answer_with_code_blocks(limit):
    text = long_answer()
    assert len(text) >= 50_000
    messages = split_text(text, limit)
    check_messages(messages, text, limit)
    assert len(messages) <= math.ceil(len(escape(text)) / (limit * 0.75)) + 1
    # clean breaks: at a line end (or a re-inserted fence), except inside the 5,000-char lines
    assert all(m.endswith(("\n", "\n```", "zzz")) for m in messages[:-1])
    pieces, splitter = stream(text, limit, [13] * (len(text) // 13 + 1))
    assert group(pieces) == splitter.messages
    check_messages(splitter.messages, text, limit)


# --- properties -------------------------------------------------------------------------

WORDS = st.sampled_from(
    [
        "hello", "world", "x", "<!here>", "<!channel>", "<!everyone>", "@here", "@channel",
        "@everyone", "@HERE", "x@here", "(@channel)", "<@U123ABC>", "<@W9|bob>", "<#C42|general>",
        "<!subteam^S1|@team>", "<https://evil|https://good>", "a&b", "&lt;", "&amp;", "<", ">",
        "&", "`", "``", "x```y", "é😀", "@", WJ,
    ]
)  # fmt: skip
SPACES = st.sampled_from([" ", " ", " ", "\n", "\n\n", "\t", "  "])
FENCES = st.sampled_from(["\n```python\n", "\n```\n", "```js\n", "\n```", "```"])
LONG = st.text(alphabet="ab<>&@!`|h", min_size=30, max_size=400)
TEXTS = st.lists(
    st.one_of(WORDS, WORDS, SPACES, SPACES, FENCES, LONG, st.text(max_size=8)), max_size=150
).map("".join)


@given(st.one_of(TEXTS, st.text()))
@settings(max_examples=300, deadline=None)
def test_escape_properties(text):
    out = escape(text)
    rest = KEPT.sub("", out)
    assert "<" not in rest and ">" not in rest
    assert not re.search(r"&(?!amp;|lt;|gt;)", out)
    assert not UNDEFUSED.search(out)
    if WJ not in text:
        assert unescape(out).replace("@" + WJ, "@") == text


@given(TEXTS, st.integers(200, 600), st.data())
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_splitter_properties(text, limit, data):
    sizes = data.draw(st.lists(st.integers(1, 40), max_size=60))
    pieces, splitter = stream(text, limit, sizes)
    assert all(p.text for p in pieces)
    assert not pieces or pieces[0].new_message is False
    messages = group(pieces)
    assert messages == splitter.messages
    assert splitter.text == "".join(messages)
    check_messages(messages, text, limit)


@given(TEXTS, st.integers(200, 600))
@settings(max_examples=150, deadline=None)
def test_split_text_properties(text, limit):
    check_messages(split_text(text, limit), text, limit)


ENTITY_OR_TOKEN = re.compile(r"&(?:amp|lt|gt);|" + KEPT.pattern)


@given(TEXTS)
@settings(max_examples=200, deadline=None)
def test_cut_rule_properties(text):
    """The one rule for where a message may end (truncate, the splitter's releases and breaks):
    each side of an allowed cut reads as it did in context, and ordinary word breaks are allowed."""
    escaped = escape(text)
    whole = ENTITY_OR_TOKEN.findall(escaped)
    for p in range(len(escaped) + 1):
        head, tail = escaped[:p], escaped[p:]
        if slack_text._cut_ok(escaped, p):
            assert ENTITY_OR_TOKEN.findall(head) + ENTITY_OR_TOKEN.findall(tail) == whole, (head, tail)
            assert not UNDEFUSED.match(tail), (head, tail)  # a message starting "@here" would notify
            assert not (tail.startswith("```") and head and not head.endswith("\n")), (head, tail)
            assert not (head.endswith("@") and tail.startswith(WJ)), (head, tail)
        elif 0 < p < len(escaped) and escaped[p - 1].isspace() and escaped[p].isalnum():
            raise AssertionError(f"a break between words was refused: {head!r} | {tail!r}")


def test_cut_rule_at_the_start_of_held_text_sees_the_character_before():
    assert not slack_text._cut_ok(WJ + "here", 0, prev="@")  # would part "@" from its word joiner
    assert not slack_text._cut_ok("@here", 0, prev="x")  # "x@here" was no broadcast; "@here" would be
    assert not slack_text._cut_ok("```", 0, prev="a")  # a mid-line ``` would start a fence
    assert slack_text._cut_ok("here", 0, prev=" ")
