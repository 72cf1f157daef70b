"""Checks a prompt file declares about its answers, for `flywheel replay`.

Under ``metadata`` (Flywheel's own keys; other Prompty tools ignore them)::

    metadata:
      checks:
        - contains: "**TL;DR:**"        # the answer contains this text (exact case)
        - not_contains: "As an AI"      # ... and never this
        - regex: "^- "                  # a Python regular expression found in it (^ and $ per line)
        - json: true                    # the answer is JSON, alone or in one fenced code block
        - max_length: 1500              # at most this many characters
        - min_length: 20                # at least this many
        - name: short enough for Slack  # optional: the label reports show
          max_length: 3000

A broken block is reported as ``path:line: reason`` like any other mistake in a prompt file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from bot.errors import PromptError
from bot.prompts import Prompt

KINDS = ("contains", "not_contains", "regex", "json", "max_length", "min_length")
_FENCED = re.compile(r"^\s*```[\w+-]*[ \t]*\n(.*?)\n[ \t]*```\s*$", re.S)


@dataclass(frozen=True)
class Check:
    kind: str
    value: Any
    name: str  # what reports call it
    test: Callable[[str], bool]

    def __call__(self, answer: str) -> bool:
        return self.test(answer)


def checks_of(prompt: Prompt) -> list[Check]:
    """The checks ``prompt``'s file declares ([] when none). Raises PromptError (path, line, reason)."""
    root = _front_matter(prompt.source)
    metadata = _get(root, "metadata")
    node = _get(metadata, "checks")
    if node is None:
        return []

    def fail(at: yaml.Node, reason: str) -> PromptError:
        return PromptError(prompt.path, at.start_mark.line + 2, f"metadata.checks: {reason}")

    if not isinstance(node, yaml.SequenceNode):
        raise fail(node, "must be a list, one check per item (- contains: \"...\")")
    checks = []
    for item in node.value:
        if not isinstance(item, yaml.MappingNode):
            raise fail(item, f"each check is a mapping such as - contains: \"...\" (one of {', '.join(KINDS)})")
        spec = yaml.safe_load(yaml.serialize(item))
        kinds = [k for k in spec if k in KINDS]
        unknown = [k for k in spec if k not in KINDS and k != "name"]
        if unknown:
            raise fail(item, f"unknown key {unknown[0]!r} (one of {', '.join(KINDS)}, and an optional name)")
        if len(kinds) != 1:
            raise fail(item, f"each check has exactly one of {', '.join(KINDS)}; this one has "
                             f"{', '.join(kinds) or 'none'}")
        kind, value = kinds[0], spec[kinds[0]]
        try:
            test = _test(kind, value)
        except ValueError as exc:
            raise fail(item, f"{kind}: {exc}") from None
        name = spec.get("name")
        if name is not None and not isinstance(name, str):
            raise fail(item, "name: must be text")
        checks.append(Check(kind, value, name or _label(kind, value), test))
    return checks


def _test(kind: str, value: Any) -> Callable[[str], bool]:
    if kind in ("contains", "not_contains"):
        if not isinstance(value, str) or not value:
            raise ValueError(f"must be a non-empty text, got {value!r}")
        return (lambda a: value in a) if kind == "contains" else (lambda a: value not in a)
    if kind == "regex":
        if not isinstance(value, str) or not value:
            raise ValueError(f"must be a regular expression, got {value!r}")
        try:
            pattern = re.compile(value, re.M)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return lambda a: pattern.search(a) is not None
    if kind == "json":
        if value is not True:
            raise ValueError(f"write json: true, got {value!r}")
        return _is_json
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        raise ValueError(f"must be a whole number of characters, got {value!r}")
    return (lambda a: len(a) <= value) if kind == "max_length" else (lambda a: len(a) >= value)


def _is_json(answer: str) -> bool:
    fenced = _FENCED.match(answer)
    try:
        json.loads(fenced.group(1) if fenced else answer)
    except ValueError:
        return False
    return True


def _label(kind: str, value: Any) -> str:
    if kind == "json":
        return "is JSON"
    if kind in ("max_length", "min_length"):
        return f"{'at most' if kind == 'max_length' else 'at least'} {value} characters"
    shown = value if len(value) <= 40 else value[:39] + "…"
    return {"contains": "contains", "not_contains": "does not contain", "regex": "matches"}[kind] + f" {shown!r}"


def _front_matter(source: str) -> yaml.Node | None:
    """The front matter's YAML node tree (its lines start at file line 2). The file loaded as a
    prompt, so the front matter is there and is valid YAML."""
    lines = source.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    close = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    return yaml.compose("\n".join(lines[1:close]), Loader=yaml.SafeLoader)


def _get(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    found = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key]
    return found[-1] if found else None
