"""A Slack app manifest that matches the prompts and the mode (paste it into "Create app")."""

from __future__ import annotations

from typing import Any

import yaml

from bot.assistant import suggested_prompts
from bot.feedback import FIX_SHORTCUT
from bot.prompts import PromptSet

BOT_SCOPES = [
    "app_mentions:read",  # @mentions
    "channels:history",  # thread context and follow-ups in public channels
    "groups:history",  # ... private channels
    "im:history",  # DMs
    "mpim:history",  # group DMs
    "chat:write",  # answers (streamed)
    "chat:write.public",  # answer slash commands in public channels the bot has not joined
    "commands",  # slash commands
    "reactions:read",  # 👍/👎 votes
    "users:read",  # people's display names, so the model reads "Ann Lee" rather than <@U…>
]
BOT_EVENTS = [
    "app_mention",
    "message.channels",
    "message.groups",
    "message.im",
    "message.mpim",
    "reaction_added",
    "reaction_removed",
    "app_home_opened",
]
PLACEHOLDER_URL = "https://YOUR-APP.example.com/slack/events"


# `--assistant`: Slack's assistant pane (bot/assistant.py). It reads DMs and, when the pane is opened
# from a channel, that channel's history: channels:history and im:history above.
ASSISTANT_SCOPES = ["assistant:write"]
ASSISTANT_EVENTS = ["assistant_thread_started", "assistant_thread_context_changed"]


def manifest(prompts: PromptSet, *, socket: bool, url: str | None = None, name: str = "Flywheel",
             assistant: bool = False) -> dict[str, Any]:
    request_url = url or PLACEHOLDER_URL
    if not request_url.rstrip("/").endswith("/slack/events"):
        request_url = request_url.rstrip("/") + "/slack/events"
    commands = []
    for prompt in prompts:
        if not prompt.command:
            continue
        command: dict[str, Any] = {
            "command": prompt.command,
            "description": (prompt.description or f"Ask the {prompt.name} prompt")[:2000],
            "should_escape": False,
        }
        if prompt.usage_hint:
            command["usage_hint"] = prompt.usage_hint[:1000]
        if not socket:
            command["url"] = request_url
        commands.append(command)
    events: dict[str, Any] = {"bot_events": list(BOT_EVENTS)}
    interactivity: dict[str, Any] = {"is_enabled": True}
    if not socket:
        events = {"request_url": request_url, **events}
        interactivity["request_url"] = request_url
    features: dict[str, Any] = {
        "app_home": {"home_tab_enabled": True, "messages_tab_enabled": True,
                     "messages_tab_read_only_enabled": False},
        "bot_user": {"display_name": name.lower()[:80], "always_online": True},
    }
    features["shortcuts"] = [{
        "name": "Fix this answer", "type": "message", "callback_id": FIX_SHORTCUT,
        "description": "Correct one of the bot's answers: the correction becomes training data",
    }]
    if commands:
        features["slash_commands"] = commands
    scopes = list(BOT_SCOPES)
    if assistant:
        features["assistant_view"] = {
            "assistant_description": "Answers with this team's prompts; can read the channel you open it from.",
            "suggested_prompts": suggested_prompts(prompts),
        }
        events["bot_events"] += [e for e in ASSISTANT_EVENTS if e not in events["bot_events"]]
        scopes += [s for s in ASSISTANT_SCOPES if s not in scopes]
    return {
        "_metadata": {"major_version": 1, "minor_version": 1},
        "display_information": {
            "name": name[:35],
            "description": "Prompt files become Slack skills; every answer is logged; votes become datasets.",
            "background_color": "#1d3557",
        },
        "features": features,
        "oauth_config": {"scopes": {"bot": scopes}},
        "settings": {
            "event_subscriptions": events,
            "interactivity": interactivity,
            "org_deploy_enabled": False,
            "socket_mode_enabled": socket,
            "token_rotation_enabled": False,
        },
    }


def to_yaml(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
