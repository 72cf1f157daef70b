"""The body of a prompt file: role markers, message templates, rendering.

The body is split into messages at lines that hold only a role marker, as Prompty's parser
reads them (``user:``, ``# user:``, ``user[name="Alice"]:``), and each message is a sandboxed
Jinja2 template. The split comes first and the variables are filled in after, so nothing a
person writes can ever start a message. What Flywheel cannot send (``developer:`` and
``tool:`` markers, other attributes, markers built from variables) is reported at its line,
never passed to the model as text.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.environment import Template
from jinja2.sandbox import SandboxedEnvironment

from bot.errors import PromptError

KNOWN_VARIABLES = ("text", "user", "channel", "date", "thread")  # what the bot fills in itself

_Fail = Callable[[int | None, str], None]  # report a problem at a file line

# A role marker, alone on its line, as Prompty's parser reads it (any case): `user:`, `# user:`
# (a markdown heading), `user[name="Alice", nonce=abc]:`. Prompty 2 also knows `developer`, and its
# messages can be `tool`: both are recognised here only to be reported, never sent as text.
_MARKER_RE = re.compile(r"^\s*#?\s*(system|user|assistant|developer|tool)(\[[^\]]*\])?\s*:\s*$", re.IGNORECASE)
_NEAR_MARKER_RE = re.compile(r"^\s*#?\s*(system|user|assistant|developer|tool)\s*\[.*\]\s*:\s*$", re.IGNORECASE)
_VARIABLE_MARKER_RE = re.compile(r"^\s*#?\s*\{\{[^}]*role[^}]*\}\}\s*(\[.*\])?\s*:\s*$")
_THREAD_PLACEHOLDER_RE = re.compile(r"^\s*!\[thread\]")  # Prompty 1: "insert the conversation here"
_ATTRIBUTE_RE = re.compile(r'\s*(\w+)\s*=\s*(?:"([^"]*)"|([^",]*))\s*(?:,|$)')
# A message's name, as OpenAI's chat API accepts it on every server version (later ones allow more).
_MESSAGE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                            keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True)
class Block:
    role: str
    line: int  # file line of the block's first template line
    template: Template
    name: Template | None = None  # the marker's name="..." attribute, itself a template
    marker_line: int = 0


def render(block: Block, values: dict[str, Any], path: Path) -> str:
    try:
        return block.template.render(values).strip()
    except Exception as exc:  # any failure inside a template is the prompt's fault
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<template>"]
        line = block.line + (frames[-1].lineno or 1) - 1 if frames else block.line
        raise PromptError(path, line, f"template error in the {block.role} block: {exc}") from exc


def render_name(block: Block, values: dict[str, Any], path: Path) -> str:
    assert block.name is not None
    try:
        name = block.name.render(values).strip()
    except Exception as exc:
        raise PromptError(path, block.marker_line, f"template error in the name of the {block.role} "
                                                   f"block: {exc}") from exc
    if name and not _MESSAGE_NAME_RE.match(name):
        raise PromptError(path, block.marker_line, _bad_name(block.role, name))
    return name


def _bad_name(role: str, name: str) -> str:
    return (f"{role}[name=...]: the name is {name!r}; a message name may hold only letters, digits, "
            "'_' and '-' (at most 64), as OpenAI's chat API requires")


@dataclass
class _Chunk:
    role: str
    marker_line: int  # file line of its role marker (for the text before the first one: its first line)
    start: int  # file line of its first template line
    lines: list[str] = field(default_factory=list)
    name: str | None = None  # the marker's name attribute, as written
    rejected: bool = False  # its marker has been reported


def _marker(line: str, number: int, fail: _Fail) -> _Chunk | None:
    """The chunk a role-marker line starts (reporting what Flywheel cannot send), or None for text."""
    found = _MARKER_RE.match(line) or _NEAR_MARKER_RE.match(line)
    if not found:
        if _THREAD_PLACEHOLDER_RE.match(line):
            fail(number, "![thread] (Prompty 1's place for the conversation) is not supported: Flywheel adds the "
                         "Slack thread itself, as conversation turns just before the last message; remove the "
                         "line (or use {{ thread }} for the thread as a transcript)")
        elif _VARIABLE_MARKER_RE.match(line):
            fail(number, "a role marker that comes from a variable is not supported: Flywheel splits the messages "
                         "at role markers before filling in variables (so nothing a person types can start a "
                         "message); the thread is added to the conversation by itself (see 'Thread context')")
        return None
    role = found.group(1).lower()
    chunk = _Chunk(role, number, number + 1)
    written = found.group(0).strip()
    attributes = _attributes(found.group(2)) if found.re is _MARKER_RE and found.group(2) else {}
    if attributes is None or found.re is _NEAR_MARKER_RE:
        fail(number, f"malformed role marker {written!r}: write it as {role}: or "
                     f'{role}[name="Alice"]: (no space before the bracket; values quoted or plain)')
        chunk.rejected = True
        return chunk
    unsupported = {
        "developer": "developer messages are not supported (not every OpenAI-compatible server accepts the "
                     "role); put these instructions under 'system:'",
        "tool": "tool messages are not supported (a tool message answers a model's tool call, and Flywheel "
                "prompts call no tools)"}
    if role in unsupported:
        fail(number, f"{written!r}: {unsupported[role]}")
        chunk.rejected = True
        return chunk
    for key in (k for k in attributes if k not in ("name", "nonce")):
        fail(number, f"{written!r}: the '{key}' attribute is not supported (Flywheel reads name=, and ignores "
                     "Prompty's nonce=)")
        chunk.rejected = True
    name = attributes.get("name")
    if name is not None and "{" not in name and not _MESSAGE_NAME_RE.match(name):
        fail(number, _bad_name(role, name))
        chunk.rejected = True
    elif name:
        chunk.name = name
    return chunk


def _attributes(raw: str) -> dict[str, str] | None:
    """``[name="Alice", nonce=abc]`` -> {"name": "Alice", "nonce": "abc"}; None if malformed."""
    inside, attributes, at = raw[1:-1], {}, 0
    while at < len(inside):
        pair = _ATTRIBUTE_RE.match(inside, at)
        if not pair or pair.end() == at:
            return None
        attributes[pair.group(1)] = pair.group(2) if pair.group(2) is not None else pair.group(3).strip()
        at = pair.end()
    return attributes or None


def compile_body(lines: list[str], first: int, quiet: set[str] | None,
                  fail: _Fail) -> tuple[list[Block], set[str]]:
    """The message blocks, and the variables they use that the template does not set. An undeclared variable is reported once,
    at its first use, unless it is in ``quiet`` (known, or reported already); None: report none."""
    chunks = [_Chunk("system", first, first)]  # Prompty: text before the first marker is a system message
    for offset, line in enumerate(lines):
        chunk = _marker(line, first + offset, fail)
        if chunk:
            chunks.append(chunk)
        else:
            chunks[-1].lines.append(line)
    if not any(c.role in ("user", "assistant") for c in chunks):
        # only system text (or no marker at all): the person's text follows as the user message
        end = first + len(lines) - 1
        chunks.append(_Chunk("user", end, end, ["{{ text }}"]))
    elif not any(c.role == "user" for c in chunks):
        fail(first, "the body has no 'user:' block; end it with a line 'user:' followed by '{{ text }}'")
    elif chunks[-1].role != "user" and not chunks[-1].rejected:
        fail(chunks[-1].marker_line, f"the last block must be 'user:' (it carries the request), "
                                     f"not '{chunks[-1].role}:'")
    if not "\n".join(chunks[0].lines).strip():
        chunks.pop(0)

    blocks: list[Block] = []
    used: set[str] = set()
    left_open = False  # the block before left a {% if %} / {% for %} open: its end here is the same mistake
    for i, chunk in enumerate(chunks):
        sources = [("\n".join(chunk.lines), chunk.start)] + ([(chunk.name, chunk.marker_line)] if chunk.name else [])
        try:
            (template, undeclared), *name = [_compile(source, line, quiet, fail) for source, line in sources]
        except _SyntaxError as exc:
            unclosed = exc.message.startswith("Unexpected end of template")
            if not (left_open and exc.message.startswith("Encountered unknown tag")):
                hint = (" (a {% if %} or {% for %} cannot contain a role marker: Flywheel splits the messages at "
                        "role markers before it fills in the template)" if unclosed and i < len(chunks) - 1 else "")
                fail(exc.line, f"template syntax error: {exc.message}{hint}")
            left_open = unclosed
            continue
        left_open = False
        used |= undeclared.union(*(n[1] for n in name))
        blocks.append(Block(chunk.role, chunk.start, template, name[0][0] if name else None, chunk.marker_line))
    return blocks, used


class _SyntaxError(Exception):
    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line, self.message = line, message


def _compile(source: str, start: int, quiet: set[str] | None, fail: _Fail) -> tuple[Template, set[str]]:
    """One Jinja2 template whose first line is file line ``start``, checked; raises ``_SyntaxError``."""
    try:
        ast = _ENV.parse(source)
        template = _ENV.from_string(ast)
    except TemplateSyntaxError as exc:
        raise _SyntaxError(start + (exc.lineno or 1) - 1, exc.message or str(exc)) from exc
    for tag in ast.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        fail(start + tag.lineno - 1, "include/extends/import are not supported: a prompt is one file")
    undeclared = meta.find_undeclared_variables(ast)
    first_use: dict[str, int] = {}
    for n in ast.find_all(nodes.Name):
        if n.ctx == "load":
            first_use[n.name] = min(n.lineno, first_use.get(n.name, n.lineno))
    for var in sorted(undeclared - quiet if quiet is not None else (), key=first_use.__getitem__):
        fail(start + first_use[var] - 1, f"unknown template variable '{var}': use one of "
                                         f"{', '.join(KNOWN_VARIABLES)}, or declare it under inputs:")
        quiet.add(var)  # type: ignore[union-attr]  # once per file: its other uses are the same mistake
    return template, undeclared
