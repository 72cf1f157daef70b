"""What the parts of the playground need of the stand-in that holds them, as a type.

The modules depend one way: ``wire`` ← ``state`` ← ``host`` ← ``webapi`` ← ``deliver`` ← ``page``
← ``slack`` (the :class:`~bot.playground.slack.StandIn`, which builds the others) ← ``run``. The
Web API, the deliveries and the page are handed the stand-in and see it through :class:`Host`
(``page`` through :class:`~bot.playground.page.PageHost`), so none of them imports ``slack``.
tests/test_playground_shape.py keeps it so.
"""

from __future__ import annotations

from typing import Any, Protocol

from bot.playground.state import State


class Host(Protocol):
    """The workspace, who the bot is, and the pages it shows changes to."""

    state: State
    base_url: str
    signing_secret: str
    bot_token: str
    bot_user_id: str
    bot_id: str
    team_id: str

    def push(self, frame: dict[str, Any]) -> None:
        """Send a frame to every connected page."""

    def show(self, channel: str, message: dict[str, Any]) -> None:
        """A message was created or changed."""

    def show_pane(self, pane: dict[str, Any]) -> None:
        """An assistant thread changed (its suggested prompts, title or status)."""

    def ephemeral(self, channel: str, *, text: str, fmt: str = "mrkdwn", blocks: list | None = None,
                  thread_ts: str | None = None, user: str | None = None) -> str:
        """Show a message only you see; returns its ts."""
        raise NotImplementedError
