"""The routing table: every Slack event, command and action the bot answers, on one screen.

Every event subscribed in the manifest (`flywheel manifest`) has a listener here,
so Slack never gets a 404 and never retries for want of one. Every listener is
``tracked``: its work, which goes on after Slack's ack (answers, corrections, the Home
tab, modals), counts as accepted, so a shutdown waits for it and the bot can tell
when it has nothing left to do.
"""

import re
from collections.abc import Callable

from slack_bolt.async_app import AsyncApp

from bot.feedback import FIX_ACTION, FIX_SHORTCUT, FIX_VIEW, REGENERATE_ACTION, VOTE_ACTION
from handlers import actions, assistant, commands, home, mentions, messages, reactions


def register(app: AsyncApp, tracked: Callable[[Callable], Callable] = lambda listener: listener) -> None:
    app.event("app_mention")(tracked(mentions.on_app_mention))
    # The assistant pane (`flywheel manifest --assistant`): questions asked there first, then other messages.
    app.event("assistant_thread_started")(tracked(assistant.on_thread_started))
    app.event("assistant_thread_context_changed")(tracked(assistant.on_context_changed))
    app.event("message", matchers=[assistant.in_pane])(tracked(assistant.on_message))
    app.event("message")(tracked(messages.on_message))  # channels, groups, DMs, thread follow-ups
    app.event("reaction_added", middleware=[reactions.record_added])(tracked(reactions.recorded))
    app.event("reaction_removed", middleware=[reactions.record_removed])(tracked(reactions.recorded))
    app.event("app_home_opened")(tracked(home.on_home_opened))  # the Home tab: figures per prompt
    app.command(re.compile(r"^/.+"))(tracked(commands.on_command))  # one per prompt with metadata.slack.command
    app.action(VOTE_ACTION)(tracked(actions.on_vote))  # 👍/👎 feedback buttons under an answer
    app.action(FIX_ACTION)(tracked(actions.on_fix))  # "Fix it" button: opens the fix modal
    app.action(REGENERATE_ACTION)(tracked(actions.on_regenerate))  # "Regenerate" button
    app.shortcut(FIX_SHORTCUT)(tracked(actions.on_fix_shortcut))  # message shortcut "Fix this answer"
    app.view(FIX_VIEW)(tracked(actions.on_fix_submit))  # the fix modal, saved
