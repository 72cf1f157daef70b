"""Team controls: `prompts/team.yaml`, kept in git next to the prompts and reloaded with them.

    admins: [U0ADMIN01]            # exempt from every budget
    budgets:                       # per day (UTC); leave out what you do not limit
      per_user:    {tokens: 200000, cost_usd: 2}
      per_channel: {cost_usd: 10}
      total:       {cost_usd: 50}
    channels:
      C0SUPPORT1:                  # a channel's id (channel details, at the bottom)
        name: support              # optional: for people reading this file
        prompt: support            # what a mention here runs when it names no prompt
        model: gpt-5.4-nano        # the model here, for prompts that pin none
        log_content: false         # log calls with tokens and cost, not their text
        budget: {cost_usd: 5}      # this channel's own daily limit (instead of per_channel)

The file is optional; without it every channel behaves alike and nothing is limited. A
mistake is reported as ``path:line: reason`` like a prompt's, and the file is then ignored
as a whole (an error in a budget must not silently lift the others), except that what it
says about content logging still holds: a channel that opted out stays out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from bot.errors import PromptError

FILE_NAME = "team.yaml"
CHANNEL_RE = re.compile(r"^[CGD][A-Z0-9]{2,}$")
USER_RE = re.compile(r"^[UW][A-Z0-9]{2,}$")
SCOPES = ("per_user", "per_channel", "total")


@dataclass(frozen=True)
class Limits:
    """A daily limit; None: not limited."""

    tokens: int | None = None
    cost_usd: float | None = None

    def __bool__(self) -> bool:
        return self.tokens is not None or self.cost_usd is not None


@dataclass(frozen=True)
class ChannelRules:
    name: str | None = None
    prompt: str | None = None
    model: str | None = None
    log_content: bool = True
    budget: Limits | None = None
    prompt_line: int | None = field(default=None, compare=False)  # where `prompt:` is, for messages


@dataclass(frozen=True)
class Team:
    admins: frozenset[str] = frozenset()
    per_user: Limits = Limits()
    per_channel: Limits = Limits()
    total: Limits = Limits()
    channels: dict[str, ChannelRules] = field(default_factory=dict)
    path: Path | None = None  # the file it came from (None: there is none)

    def channel(self, channel_id: str | None) -> ChannelRules:
        return self.channels.get(channel_id or "", _ANY)

    def logs_content(self, channel_id: str | None) -> bool:
        return self.channel(channel_id).log_content

    def channel_limits(self, channel_id: str | None) -> Limits:
        rules = self.channel(channel_id)
        return rules.budget if rules.budget is not None else self.per_channel

    @property
    def limited(self) -> bool:
        return bool(self.per_user or self.per_channel or self.total
                    or any(c.budget for c in self.channels.values()))


_ANY = ChannelRules()
NO_TEAM = Team()

_Fail = Callable[[int | None, str], None]


def load_team(directory: Path) -> tuple[Team, list[PromptError]]:
    """``directory/team.yaml``, checked; (NO_TEAM, []) when there is no such file."""
    from bot.prompts import _line

    path = directory / FILE_NAME
    if not path.is_file():
        return NO_TEAM, []
    problems: list[PromptError] = []

    def fail(line: int | None, reason: str) -> None:
        problems.append(PromptError(path, line, reason))

    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return NO_TEAM, [PromptError(path, None, f"cannot read the file: {exc}")]
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        return NO_TEAM, [PromptError(path, mark.line + 1 if mark else 1, f"invalid YAML: {exc}")]
    finally:
        loader.dispose()
    if data is None:
        return Team(path=path), []
    at = partial(_line, root, offset=1)
    if not isinstance(data, dict):
        return NO_TEAM, [PromptError(path, 1, "must be YAML keys: admins:, budgets:, channels:")]
    for key in data:
        if key not in ("admins", "budgets", "channels"):
            fail(at(key), f"unknown key '{key}' (allowed: admins, budgets, channels)")

    admins = data.get("admins") or []
    if not isinstance(admins, list) or not all(isinstance(a, str) and USER_RE.match(a) for a in admins):
        fail(at("admins"), "admins: must be a list of Slack user ids (U…); find one in a person's profile, "
                           "⋮ → Copy member ID")
        admins = []

    budgets = data.get("budgets") or {}
    limits: dict[str, Limits] = {}
    if not isinstance(budgets, dict):
        fail(at("budgets"), f"budgets: must be a mapping ({', '.join(SCOPES)})")
        budgets = {}
    for key in budgets:
        if key not in SCOPES:
            fail(at("budgets", key), f"budgets.{key}: unknown (allowed: {', '.join(SCOPES)})")
    for scope in SCOPES:
        limits[scope] = _limits(budgets.get(scope), f"budgets.{scope}", partial(at, "budgets", scope), fail)

    channels: dict[str, ChannelRules] = {}
    raw_channels = data.get("channels") or {}
    if not isinstance(raw_channels, dict):
        fail(at("channels"), "channels: must map channel ids (C…) to their settings")
        raw_channels = {}
    opted_out: dict[str, ChannelRules] = {}
    for channel_id, rules in raw_channels.items():
        where = partial(at, "channels", channel_id)
        label = f"channels.{channel_id}"
        if not isinstance(channel_id, str) or not CHANNEL_RE.match(channel_id):
            fail(where(), f"{label}: a channel is named by its id (C…, from the channel's details), "
                          f"not {channel_id!r}")
            continue
        if not isinstance(rules, dict):
            fail(where(), f"{label}: must be a mapping (prompt:, model:, log_content:, budget:)")
            continue
        for key in rules:
            if key not in ("name", "prompt", "model", "log_content", "budget"):
                fail(where(key), f"{label}.{key}: unknown (allowed: name, prompt, model, log_content, budget)")
        log_content = rules.get("log_content", True)
        if not isinstance(log_content, bool):
            fail(where("log_content"), f"{label}.log_content: must be true or false")
            log_content = False  # when in doubt, keep the text out
        for key in ("name", "prompt", "model"):
            if rules.get(key) is not None and not (isinstance(rules[key], str) and rules[key].strip()):
                fail(where(key), f"{label}.{key}: must be text")
        budget = _limits(rules.get("budget"), f"{label}.budget", partial(where, "budget"), fail) \
            if rules.get("budget") is not None else None
        channels[channel_id] = ChannelRules(
            name=rules.get("name"), prompt=(rules.get("prompt") or "").strip().lower() or None,
            model=(rules.get("model") or "").strip() or None, log_content=log_content, budget=budget,
            prompt_line=where("prompt"))
        if not log_content:
            opted_out[channel_id] = ChannelRules(log_content=False)
    if problems:  # ignored as a whole, but an opt-out of content logging still holds
        return Team(channels=opted_out, path=path), problems
    return Team(frozenset(admins), limits["per_user"], limits["per_channel"], limits["total"], channels, path), []


def check_prompts(team: Team, prompts: dict[str, Any], problems: list[PromptError]) -> Team:
    """A channel's default prompt must be one that loaded: else it is reported, and that
    channel's mentions go to the usual default."""
    if team.path is None:
        return team
    channels = dict(team.channels)
    for channel_id, rules in team.channels.items():
        if rules.prompt is None:
            continue
        prompt = prompts.get(rules.prompt)
        if prompt is None:
            why = f"no valid prompt named '{rules.prompt}' (found: {', '.join(sorted(prompts)) or 'none'})"
        elif not prompt.allowed_in(channel_id):
            why = f"{rules.prompt}.prompty keeps itself to other channels (metadata.slack.channels)"
        else:
            continue
        problems.append(PromptError(team.path, rules.prompt_line, (
            f"channels.{channel_id}.prompt: {why}; mentions there get the default meanwhile")))
        channels[channel_id] = replace(rules, prompt=None)
    return replace(team, channels=channels)


def _limits(raw: Any, label: str, at: Callable[..., int], fail: _Fail) -> Limits:
    if raw is None:
        return Limits()
    if not isinstance(raw, dict):
        fail(at(), f"{label}: must be a mapping with tokens: and/or cost_usd:")
        return Limits()
    for key in raw:
        if key not in ("tokens", "cost_usd"):
            fail(at(key), f"{label}.{key}: unknown (allowed: tokens, cost_usd)")
    tokens, cost = raw.get("tokens"), raw.get("cost_usd")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0):
        fail(at("tokens"), f"{label}.tokens: must be a whole number of tokens per day, got {tokens!r}")
        tokens = None
    if cost is not None and (isinstance(cost, bool) or not isinstance(cost, int | float) or cost < 0):
        fail(at("cost_usd"), f"{label}.cost_usd: must be US dollars per day (e.g. 2.50), got {cost!r}")
        cost = None
    return Limits(tokens, float(cost) if cost is not None else None)
