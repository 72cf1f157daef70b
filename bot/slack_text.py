r"""Pure text for Slack: strip the bot's mention, escape model output, split long answers.

Everything here is a function of its arguments: no I/O, no Slack client.

Safety model (notes/slack-platform.md §7): Slack treats ``&``, ``<`` and ``>`` as
control characters, and ``<!here>``, ``<!channel>``, ``<!everyone>`` and
``<!subteam^S…>`` notify people when a bot posts them. Model output is data, so
:func:`escape` neutralises every ``<…>`` except well-formed user mentions and
channel links, and inserts U+2060 WORD JOINER into literal ``@here`` /
``@channel`` / ``@everyone``. Never post with ``link_names`` or ``parse=full``.

Lengths are Python ``len()`` (code points) of the *escaped* text, which is what
Slack receives.

>>> escape("<!channel> ship it & <@U123ABC> reviews")
'&lt;!channel&gt; ship it &amp; <@U123ABC> reviews'
>>> split_text("one\n\ntwo", limit=200)
['one\n\ntwo']
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "WORD_JOINER",
    "MessageSplitter",
    "Piece",
    "escape",
    "mentions",
    "quote",
    "split_text",
    "strip_mention",
    "truncate",
    "unescape",
]

WORD_JOINER = "\u2060"
FENCE = "```"
CLOSE_FENCE = "\n```"

# Kept as they are by escape(): user mentions and channel links, optionally labelled.
# Bounded lengths and no whitespace in the label keep a token inside one "word",
# which the splitter relies on (it never escapes half a token). Ids may hold "_" (the
# playground's people are U_YOU and the like; Slack's own ids never do).
_MAX_TOKEN = 140
_KEEP = re.compile(r"<(?:@[UW][A-Z0-9_]{1,30}|#C[A-Z0-9]{1,30})(?:\|[^\s<>|]{0,100})?>")
_SPECIAL = re.compile(r"[&<>]")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_UNESCAPE = re.compile(r"&(amp|lt|gt);")
_UNENTITIES = {"amp": "&", "lt": "<", "gt": ">"}
_BROADCAST = re.compile(r"(?<!\w)@(?=here|channel|everyone)", re.IGNORECASE)
_BROADCAST_LEN = len("@everyone")
_BROADCAST_WORD = re.compile(r"@(?:here|channel|everyone)", re.IGNORECASE)


# --- mentions ---------------------------------------------------------------------------


def _mention_pattern(user_id: str) -> str:
    return r"<@" + re.escape(user_id) + r"(?:\|[^<>]*)?>"


def strip_mention(text: str, bot_user_id: str) -> str:
    """Remove every mention of the bot (``<@UBOT>`` or ``<@UBOT|name>``) and tidy the gap.

    The whitespace around a removed mention collapses to one space, or to nothing at
    a line edge or before punctuation; the result is stripped. Other users'
    mentions stay. Apply it to Slack's (escaped) text *before* :func:`unescape`,
    so that a user who typed a literal ``<@UBOT>`` is not mistaken for a mention.

    >>> strip_mention("<@UBOT> summarize this", "UBOT")
    'summarize this'
    >>> strip_mention("hey <@UBOT|flywheel>, ask <@U999> and <@UBOT>  <@UBOT> now", "UBOT")
    'hey, ask <@U999> and now'
    >>> strip_mention("first line\\n<@UBOT> second", "UBOT")
    'first line\\nsecond'
    """
    if not bot_user_id:
        return text.strip()
    mention = _mention_pattern(bot_user_id)
    pattern = re.compile(r"[ \t]*(?:" + mention + r"[ \t]*)+")

    def gap(m: re.Match[str]) -> str:
        before = text[m.start() - 1] if m.start() > 0 else "\n"
        after = text[m.end()] if m.end() < len(text) else "\n"
        if before in "\r\n" or after in "\r\n" or after in ",.;:!?)]}" or before in "([{":
            return ""
        return " "

    return pattern.sub(gap, text).strip()


def mentions(text: str, user_id: str) -> bool:
    """Does ``text`` mention ``user_id`` (``<@U…>`` or ``<@U…|name>``)?

    >>> mentions("thanks <@U12|ann>!", "U12"), mentions("<@U123>", "U12")
    (True, False)
    """
    return bool(user_id) and re.search(_mention_pattern(user_id), text) is not None


# --- escaping ---------------------------------------------------------------------------


def _escape_plain(text: str) -> str:
    return _SPECIAL.sub(lambda m: _ENTITIES[m.group()], text)


def escape(text: str) -> str:
    r"""Make model output safe to post as Slack message text.

    ``&``, ``<`` and ``>`` become ``&amp;``, ``&lt;``, ``&gt;`` except inside
    well-formed user mentions (``<@U123>``, ``<@W123|name>``) and channel links
    (``<#C123>``, ``<#C123|name>``), which are kept (an ``&`` in their label is
    still escaped). Broadcasts, user groups and disguised links come out inert.
    Entities already in the text are escaped again: the model's text is data.
    ``@here``, ``@channel`` and ``@everyone`` (any case) get a WORD JOINER after
    the ``@`` when the ``@`` starts a word (``ops@channel.io`` is left alone).

    >>> escape("<!here> <!subteam^S1|@team> <https://evil|https://good>")
    '&lt;!here&gt; &lt;!subteam^S1|@team&gt; &lt;https://evil|https://good&gt;'
    >>> escape("ask <@U123ABC|ann> in <#C42|general>, not <@here>")
    'ask <@U123ABC|ann> in <#C42|general>, not &lt;@\u2060here&gt;'
    >>> escape("@Channel: a &lt; b, mail ops@here.io")
    '@\u2060Channel: a &amp;lt; b, mail ops@here.io'
    """
    parts: list[str] = []
    pos = 0
    for m in _KEEP.finditer(text):
        parts.append(_escape_plain(text[pos : m.start()]))
        parts.append(m.group().replace("&", "&amp;"))
        pos = m.end()
    parts.append(_escape_plain(text[pos:]))
    return _BROADCAST.sub("@" + WORD_JOINER, "".join(parts))


def unescape(text: str) -> str:
    """Decode ``&amp;``, ``&lt;`` and ``&gt;`` (Slack message text read back as model context).

    Mentions stay as they are. ``unescape(escape(s)) == s`` except for the word
    joiners that :func:`escape` inserted.

    >>> unescape("a &amp;lt; b &gt; <@U1>")
    'a &lt; b > <@U1>'
    """
    return _UNESCAPE.sub(lambda m: _UNENTITIES[m.group(1)], text)


# --- cut points -------------------------------------------------------------------------


def _cut_ok(text: str, p: int, prev: str = "") -> bool:
    """May escaped ``text`` be cut at ``p`` without breaking a token or creating a new one?

    The one rule for where a message may end: `truncate`, the splitter's releases and its
    breaks all ask it. ``prev`` is the character before ``text`` (for ``p == 0``). Rejects
    cuts inside an entity (``&amp;``) or a kept ``<…>`` token, between ``@`` and its word
    joiner, before an ``@`` that follows a word character (``x@here`` was not defused, but
    a message starting ``@here`` would notify), and before a mid-line ``` (a message
    must not start with a fake fence).
    """
    p = max(p, 0)
    if 0 < p < len(text):
        lt = text.rfind("<", max(0, p - _MAX_TOKEN), p)
        if lt >= 0 and text.find(">", lt, p) < 0:
            return False
        amp = text.rfind("&", max(0, p - 4), p)
        if amp >= 0 and text.find(";", amp, p) < 0:
            return False
    before = text[p - 1] if p else prev
    if before == "@" and text[p : p + 1] == WORD_JOINER:
        return False
    return not _starts_badly(text, p, before)


def _starts_badly(text: str, p: int, before: str) -> bool:
    """Would a message starting at ``text[p]`` read differently than it does in context?"""
    nxt = text[p : p + 1]
    if nxt == "@":  # escape() saw no word start here; at the start of a message it would be one
        return before.isalnum() or before == "_"
    if nxt == "`" and before and before != "\n":  # mid-line ``` would become a fence line
        head = text[p : p + 3]
        return head == FENCE or (len(head) < 3 and p + len(head) == len(text) and not head.strip("`"))
    return False


def _back_off(text: str, p: int, lo: int = 0, prev: str = "") -> int:
    """The largest ``q`` in ``[lo, p]`` where :func:`_cut_ok` holds, else ``lo``."""
    p = min(p, len(text))
    while p > lo and not _cut_ok(text, p, prev):
        lt = text.rfind("<", max(lo, p - _MAX_TOKEN), p)
        p = lt if lt >= 0 and text.find(">", lt, p) < 0 else p - 1
    return max(p, lo)


def truncate(text: str, limit: int, marker: str = "…") -> str:
    """Shorten ``text`` to at most ``limit`` characters, ending with ``marker`` if cut.

    Cuts at the last whitespace when that keeps at least half of the room, else
    mid-word; never inside an ``&…;`` entity or a ``<@U…>`` token, so it is safe on
    escaped text too.

    >>> truncate("deploy the new billing service today", 20)
    'deploy the new…'
    >>> truncate("short", 20)
    'short'
    >>> truncate("abcdefghijklmnopqrstuvwxyz", 10)
    'abcdefghi…'
    """
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    if len(marker) >= limit:
        return marker[:limit]
    room = limit - len(marker)
    cut = _back_off(text, room)
    head = text[:cut]
    if not text[cut].isspace():
        space = max(head.rfind(c) for c in " \t\n")
        if space >= room // 2:
            head = head[:space]
    return head.rstrip() + marker


def quote(text: str, limit: int = 300) -> str:
    """Render user-written text as a Slack block quote of at most ``limit`` characters.

    The text is stripped, escaped, truncated (counting the ``"> "`` prefixes) and
    every line is prefixed with ``"> "``. Empty or blank text gives ``""``.

    >>> quote("summarize <!channel>\\nplease")
    '> summarize &lt;!channel&gt;\\n> please'
    >>> quote("a long request about many things", limit=20)
    '> a long request…'
    >>> quote("   ")
    ''
    """
    text = text.strip()
    if not text or limit < 3:
        return ""
    body = escape(text)

    def render(s: str) -> str:
        return "\n".join("> " + line for line in s.split("\n"))

    best = render(body)
    if len(best) <= limit:
        return best
    best, lo, hi = "", 0, len(body)
    while lo <= hi:  # largest truncation that still fits once prefixed
        mid = (lo + hi) // 2
        candidate = render(truncate(body, mid))
        if len(candidate) <= limit:
            best, lo = candidate, mid + 1
        else:
            hi = mid - 1
    return best


# --- fences -----------------------------------------------------------------------------


class _Fences:
    """Code-fence state of a text stream: a line starting with ``` opens or closes a block."""

    __slots__ = ("cap", "fence_line", "in_fence", "line", "line_len", "opening", "opening_len")

    def __init__(self, cap: int):
        self.cap = cap  # longest opening line worth repeating
        self.in_fence = False  # toggled as soon as a line's first three chars are ```
        self.line = ""  # current line (kept while it may be, or is, a fence line; capped)
        self.line_len = 0
        self.fence_line = False
        self.opening = FENCE  # the line that opened the current block
        self.opening_len = 3

    def copy(self) -> _Fences:
        other = _Fences(self.cap)
        for name in self.__slots__:
            setattr(other, name, getattr(self, name))
        return other

    def feed(self, text: str) -> None:
        start = 0
        while True:
            nl = text.find("\n", start)
            end = len(text) if nl < 0 else nl
            if end > start:
                self._extend(text[start:end])
            if nl < 0:
                return
            if self.fence_line and self.in_fence:
                self.opening, self.opening_len = self.line, self.line_len
            self.line, self.line_len, self.fence_line = "", 0, False
            start = nl + 1

    def _extend(self, seg: str) -> None:
        if self.line_len < 3 or self.fence_line:
            if self.line_len <= self.cap:
                self.line += seg[: self.cap + 1 - self.line_len]
            if self.line_len < 3 and self.line.startswith(FENCE):
                self.fence_line = True
                self.in_fence = not self.in_fence
        self.line_len += len(seg)

    def breakable(self, text: str, p: int) -> bool:
        """Given this state at ``text[p]``, is ``p`` outside any fence line?"""
        if self.line_len == 0:
            return True
        if self.fence_line:
            return False
        if self.line_len >= 3 or self.line.strip("`"):
            return True
        ahead = text[p : p + 3 - self.line_len]
        if "\n" in ahead:
            return True
        return len(self.line) + len(ahead) == 3 and not (self.line + ahead).startswith(FENCE)

    def reopen(self) -> str:
        """The fence line that reopens the current block in a new message."""
        if self.fence_line:  # forced cut inside the opening line itself
            line, length = self.line, self.line_len
        else:
            line, length = self.opening, self.opening_len
        return line if length <= self.cap else FENCE


# --- splitting --------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """Escaped text to append to the current message.

    ``new_message``: finish the current message first, then start a new one with
    this text (the first piece of an answer has ``new_message=False``).
    """

    text: str
    new_message: bool = False


# Smallest limit for which a fresh message (re-opened fence + closing fence) still has
# room for the longest kept <@U…|label> token, so that no token is ever cut.
MIN_LIMIT = 200


class MessageSplitter:
    r"""Turns a stream of model text deltas into Slack-safe pieces for one answer that may span several messages.

    ``feed(delta)`` returns the pieces that are now safe to send, ``close()`` the
    rest. Released text is escaped with :func:`escape`; limits count escaped
    characters, including re-inserted fences.

    - Escaping never sees half a token: the trailing partial word (after the last
      whitespace) is held back, so ``"@he" + "re"`` and ``"<!chan" + "nel>"`` are
      caught. A word longer than 256 characters is released in safe slices.
    - Each message stays within ``limit``. Text near the end of a message is held
      (up to ``min(limit // 4, 2000)`` characters) so that the break can go after
      the last blank line, else the last newline, else the last space, else a hard
      cut; never inside an entity, a ``<@U…>`` token or a fence line.
    - A break inside a ``` block ends the message with ``"\n```"`` and starts the
      next one with the opening fence line again (e.g. ``"```python\n"``). An
      unclosed block is closed at ``close()``.
    - A new message is not started with whitespace alone: whitespace after a break is
      held until visible text follows, and dropped at ``close()`` if none does.

    >>> s = MessageSplitter(limit=200)
    >>> s.feed("Use @he"), s.feed("re and <!chan"), s.feed("nel>")
    ([Piece(text='Use ', new_message=False)], [Piece(text='@\u2060here and ', new_message=False)], [])
    >>> s.close()
    [Piece(text='&lt;!channel&gt;', new_message=False)]
    >>> first, second = split_text("```python\n" + "x = 1\n" * 60 + "```", limit=200)
    >>> len(first), first[-10:], second[:16]
    (200, 'x = 1\n\n```', '```python\nx = 1\n')
    """

    _LONG_WORD = 256

    def __init__(self, limit: int = 11_000):
        if limit < MIN_LIMIT:
            raise ValueError(f"limit must be at least {MIN_LIMIT} characters, got {limit}")
        self.limit = limit
        self._window = max(8, min(limit // 4, 2_000))
        self._raw = ""  # unescaped partial word, not yet safe to escape
        self._held = ""  # escaped, not yet released
        self._fences = _Fences(cap=max(3, min(80, limit // 4)))  # state at the end of released text
        self._size = 0  # characters in the current message as sent (incl. a reopened fence)
        self._content = 0  # answer characters in the current message
        self._prev = ""  # last two released answer characters
        self._pending = False  # a message was finished; the next piece starts a new one
        self._reopen = ""  # fence line + "\n" to start the pending message with
        self._messages: list[list[str]] = []
        self._closed = False

    # -- public -------------------------------------------------------------------------

    def feed(self, delta: str) -> list[Piece]:
        """Add model text; return the pieces that are now safe to send."""
        if self._closed:
            raise RuntimeError("MessageSplitter.feed() after close()")
        if not delta:
            return []
        self._raw += delta
        cut = self._raw_cut()
        if cut:
            self._held += escape(self._raw[:cut])
            self._raw = self._raw[cut:]
        return self._pump(final=False)

    def close(self) -> list[Piece]:
        """The answer is complete: return everything still held back."""
        if self._closed:
            return []
        self._closed = True
        self._held += escape(self._raw)
        self._raw = ""
        out = self._pump(final=True)
        if self._fences.in_fence and self._content and not self._pending:
            self._emit(CLOSE_FENCE, out)
        return out

    @property
    def text(self) -> str:
        """All text released so far, as sent: the pieces concatenated, messages back to back."""
        return "".join("".join(m) for m in self._messages)

    @property
    def messages(self) -> list[str]:
        """The text of each message released so far, as sent."""
        return ["".join(m) for m in self._messages]

    # -- internals ----------------------------------------------------------------------

    def _raw_cut(self) -> int:
        """How much of the raw buffer escapes the same alone as in context."""
        raw = self._raw
        if raw[-1].isspace():
            return len(raw)
        word = raw.rsplit(None, 1)[-1]
        cut = len(raw) - len(word)
        if len(word) > self._LONG_WORD:
            cut = max(cut, _raw_word_cut(raw, cut, len(raw) - 16))
        return cut

    def _pump(self, final: bool) -> list[Piece]:
        out: list[Piece] = []
        while self._held:
            held = self._held
            room = self.limit - self._size
            if self._pending and held.isspace():
                if final:
                    self._held = ""  # don't start a message with only whitespace
                    break
                if len(held) + self._window <= room:
                    break  # hold it until something visible follows
            if final:
                if len(held) <= room:
                    end = self._fences.copy()
                    end.feed(held)
                    if len(held) + (len(CLOSE_FENCE) if end.in_fence else 0) <= room:
                        self._release(len(held), out)
                        break
            elif len(held) + self._window <= room:
                self._release(len(held), out)
                break
            # Near the end of the message: release what is clearly safe, keep a window to break in.
            q = _back_off(held, room - self._window, 0, self._prev[-1:]) if room > self._window else 0
            line_start = held.rfind("\n", 0, q) + 1
            if held.startswith("`", line_start):
                q = line_start  # keep a possible fence line whole, so the break can go around it
            if q > 0:
                self._release(q, out)
                continue
            if not final and len(held) + len(CLOSE_FENCE) <= room:
                break  # wait for more text before choosing where to break
            self._break(out)
        return out

    def _release(self, n: int, out: list[Piece]) -> None:
        chunk, self._held = self._held[:n], self._held[n:]
        self._fences.feed(chunk)
        self._size += n
        self._content += n
        self._prev = (self._prev + chunk)[-2:]
        self._emit(chunk, out)

    def _emit(self, text: str, out: list[Piece]) -> None:
        new = self._pending
        if new:
            text = self._reopen + text
            self._pending, self._reopen = False, ""
        if new or not self._messages:
            self._messages.append([])
        self._messages[-1].append(text)
        if out and not new:
            out[-1] = Piece(out[-1].text + text, out[-1].new_message)
        else:
            out.append(Piece(text, new))

    def _break(self, out: list[Piece]) -> None:
        """End the current message at the best point in the held text and start a new one."""
        p = self._choose_break()
        if p:
            self._release(p, out)
        if self._fences.in_fence:
            self._emit(CLOSE_FENCE, out)
            self._reopen = self._fences.reopen() + "\n"
        self._pending = True
        self._size = len(self._reopen)
        self._content = 0

    def _choose_break(self) -> int:
        held = self._held
        room = self.limit - self._size
        st = self._fences.copy()
        prev2 = self._prev
        best = [-1, -1, -1, -1]  # after a blank line, after a newline, after a space, anywhere
        n = min(len(held), room)
        for p in range(n + 1):
            before = prev2[-1:]
            if (
                (p or self._content)
                and p + (len(CLOSE_FENCE) if st.in_fence else 0) <= room
                and _cut_ok(held, p, before)
                and st.breakable(held, p)
            ):
                if prev2.endswith("\n\n"):
                    best[0] = p
                elif before == "\n":
                    best[1] = p
                elif before.isspace():
                    best[2] = p
                else:
                    best[3] = p
            if p == n:
                break
            c = held[p]
            st.feed(c)
            prev2 = prev2[-1:] + c
        for p in best:
            if p >= 0:
                return p
        # Nothing clean fits (e.g. a fence line longer than the room): cut hard.
        lo = 0 if self._content else 1
        hard = max(lo, min(len(held), room - len(CLOSE_FENCE)))
        q = _back_off(held, hard, lo, self._prev[-1:])
        return q if _cut_ok(held, q, self._prev[-1:]) and (q or self._content) else hard


def _raw_word_cut(raw: str, lo: int, hi: int) -> int:
    """A cut in ``raw[lo:hi]`` (one long word, unescaped) where escaping each side alone
    gives the same as escaping the whole; ``lo`` if none is found quickly."""
    p = hi
    for _ in range(32):
        if p <= lo:
            break
        lt = raw.rfind("<", max(lo, p - _MAX_TOKEN), p)
        if lt >= 0 and raw.find(">", lt, p) < 0:
            p = lt  # don't split a possible <@U…> token
            continue
        for m in _BROADCAST_WORD.finditer(raw, max(lo, p - _BROADCAST_LEN), p + _BROADCAST_LEN):
            at = m.start()
            if at < p < m.end() or (at == p and (raw[p - 1].isalnum() or raw[p - 1] == "_")):
                p = at if at < p else p - 1  # don't split an @here / @channel / @everyone
                break
        else:
            return p
    return lo


def split_text(text: str, limit: int) -> list[str]:
    r"""Escape complete text and split it into Slack messages of at most ``limit`` characters.

    Same rules as :class:`MessageSplitter` (which it uses).

    >>> first, second = split_text("word " * 32 + "\n\nNext paragraph, " + "and more " * 6, limit=200)
    >>> first[-8:], second[:15]
    (' word \n\n', 'Next paragraph,')
    >>> split_text("", 200)
    []
    """
    splitter = MessageSplitter(limit)
    splitter.feed(text)
    splitter.close()
    return splitter.messages
