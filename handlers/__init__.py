"""The routing table: every Slack event, command and action the bot answers, on one screen.

Every event subscribed in the manifest (`flywheel manifest`) has a listener here,
so Slack never gets a 404 and never retries for want of one.
"""

import re

from slack_bolt.async_app import AsyncApp

from handlers import commands, mentions, messages, reactions


def register(app: AsyncApp) -> None:
    app.event("app_mention")(mentions.on_app_mention)
    app.event("message")(messages.on_message)  # channels, groups, DMs, thread follow-ups
    app.event("reaction_added", middleware=[reactions.record_added])(reactions.recorded)
    app.event("reaction_removed", middleware=[reactions.record_removed])(reactions.recorded)
    app.command(re.compile(r"^/.+"))(commands.on_command)  # one per prompt with metadata.slack.command
