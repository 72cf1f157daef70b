"""The Slack Web API subset the bot calls, served at ``/api/{method}`` (the bot's SLACK_API_URL).

Answers have Slack's shapes: HTTP 200 with ``{"ok": true, ...}`` or ``{"ok": false, "error": code}``.
Every call needs ``Authorization: Bearer <bot token>`` (``not_authed`` without it, ``invalid_auth``
with another). Parameters come from the query string, a form body or a JSON body, as
``slack_sdk`` sends them. Every change is pushed to the page (``Host.show``).
The rules every stand-in shares are in :mod:`bot.playground.wire`.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from aiohttp import web

from bot.playground.host import Host
from bot.playground.state import APP_ID, BOT_NAME, ME, MY_NAME, TEAM_DOMAIN, TEAM_NAME
from bot.playground.wire import (
    MAX_TEXT,
    MAX_UPDATE_TEXT,
    MAX_VIEW_BLOCKS,
    SlackError,
    check_blocks,
    check_metadata,
    history_page,
    message_text,
    read_params,
    replies_page,
    stream_text,
    truthy,
)

TRIGGER_SECONDS = 3.0  # a trigger_id is good for one view, within 3 seconds
SCOPES = ("app_mentions:read,channels:history,chat:write,commands,groups:history,im:history,"
          "mpim:history,reactions:read,reactions:write,users:read")
_METHOD = re.compile(r"^[A-Za-z]+(?:\.[A-Za-z]+)+$")


class WebApi:
    def __init__(self, standin: Host):
        self.s = standin
        self.views: dict[str, dict[str, Any]] = {}  # open modals by id
        self.triggers: dict[str, float] = {}  # trigger_id -> when issued
        self._ids = 0

    @property
    def state(self):
        return self.s.state

    # -- HTTP ------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        headers = {"x-oauth-scopes": SCOPES, "x-accepted-oauth-scopes": ""}
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return web.json_response({"ok": False, "error": "not_authed"}, headers=headers)
        if auth[7:].strip() != self.s.bot_token:
            return web.json_response({"ok": False, "error": "invalid_auth"}, headers=headers)
        implementation = getattr(self, "api_" + method.replace(".", "_"), None) if _METHOD.match(method) else None
        if implementation is None:
            return web.json_response({"ok": False, "error": "unknown_method", "req_method": method}, headers=headers)
        try:
            params = await self._params(request)
            body = {"ok": True, **implementation(params)}
        except SlackError as exc:
            body = {"ok": False, "error": exc.code}
        except (TypeError, ValueError, AttributeError, KeyError):  # a malformed parameter
            body = {"ok": False, "error": "invalid_arguments"}
        return web.json_response(body, headers=headers)

    _params = staticmethod(read_params)

    # -- checks ----------------------------------------------------------------------

    def _channel(self, params: dict[str, Any], name: str = "channel") -> str:
        channel = params.get(name)
        if channel == ME:  # posting to a user's id posts in the app's DM with them
            channel = next(c for c, info in self.state.channels.items() if info["is_im"])
        if not isinstance(channel, str) or channel not in self.state.channels:
            raise SlackError("channel_not_found")
        return channel

    def _message(self, params: dict[str, Any], ts_name: str = "ts") -> tuple[str, dict[str, Any]]:
        channel = self._channel(params)
        message = self.state.get(channel, params.get(ts_name))
        if message is None:
            raise SlackError("message_not_found")
        return channel, message

    def _own(self, params: dict[str, Any], error: str) -> tuple[str, dict[str, Any]]:
        channel, message = self._message(params)
        if message.get("bot_id") != self.s.bot_id:
            raise SlackError(error)
        return channel, message

    def _thread(self, channel: str, thread_ts: Any) -> str | None:
        if not thread_ts:
            return None
        root = self.state.root_of(channel, str(thread_ts))
        if root is None:
            raise SlackError("thread_not_found")
        return root

    _blocks = staticmethod(check_blocks)
    _metadata = staticmethod(check_metadata)

    def _show(self, channel: str, *messages: dict[str, Any] | None) -> None:
        for message in messages:
            if message is not None:
                self.s.show(channel, message)

    # -- auth, users, conversations --------------------------------------------------------

    def api_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"url": f"https://{TEAM_DOMAIN}.slack.com/", "team": TEAM_NAME, "user": BOT_NAME,
                "team_id": self.s.team_id, "user_id": self.s.bot_user_id, "bot_id": self.s.bot_id,
                "is_enterprise_install": False}

    def api_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        names = {ME: MY_NAME, self.s.bot_user_id: BOT_NAME}
        user = params.get("user")
        if user not in names:
            raise SlackError("user_not_found")
        name = names[user]
        return {"user": {"id": user, "team_id": self.s.team_id, "name": name, "real_name": name,
                         "deleted": False, "is_bot": user == self.s.bot_user_id, "tz": "UTC", "tz_offset": 0,
                         "profile": {"real_name": name, "display_name": name}}}

    def api_conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        info = self.state.channels[self._channel(params)]
        im = info["is_im"]
        channel = {"id": info["id"], "is_channel": not im, "is_im": im, "is_private": im, "is_member": True,
                   "is_archived": False, "created": 1_700_000_000}
        channel.update({"user": ME} if im else {"name": info["name"], "name_normalized": info["name"]})
        return {"channel": channel}

    def api_conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        messages, more, cursor = history_page(
            self.state.sorted(channel), params,
            include=lambda m: not self.state.is_reply(m) or m.get("subtype") == "thread_broadcast")
        return self._page(messages, more, cursor, params, pin_count=0)

    def api_conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        anchor = self.state.get(channel, params.get("ts"))
        if anchor is None:
            raise SlackError("thread_not_found")
        messages, more, cursor = replies_page(self.state.thread(channel, anchor.get("thread_ts") or anchor["ts"]),
                                              params)
        return self._page(messages, more, cursor, params)

    def _page(self, messages: list[dict], more: bool, cursor: str, params: dict[str, Any],
              **extra: Any) -> dict[str, Any]:
        metadata = truthy(params.get("include_all_metadata"))
        return {"messages": [self.state.for_api(m, metadata=metadata) for m in messages], "has_more": more,
                **extra, "response_metadata": {"next_cursor": cursor}}

    # -- chat ------------------------------------------------------------------------------

    def api_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        text, markdown = message_text(params)
        blocks = self._blocks(params.get("blocks"))
        thread = self._thread(channel, params.get("thread_ts"))
        message, parent = self.state.add(
            channel, user=self.s.bot_user_id, bot=True, text=text,
            fmt="markdown" if markdown else "mrkdwn", thread_ts=thread, blocks=blocks,
            metadata=self._metadata(params.get("metadata")),
            subtype="thread_broadcast" if thread and truthy(params.get("reply_broadcast")) else None)
        self._show(channel, message, parent)
        self._replied(channel, thread)
        return {"channel": channel, "ts": message["ts"], "message": self.state.for_api(message)}

    def api_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, message = self._own(params, "cant_update_message")
        if message.get("streaming"):
            raise SlackError("streaming_state_conflict")
        markdown, text = params.get("markdown_text"), params.get("text")
        blocks = self._blocks(params.get("blocks"))
        if markdown and (text or blocks):
            raise SlackError("markdown_text_conflict")
        if len(markdown or "") > MAX_UPDATE_TEXT or len(text or "") > MAX_UPDATE_TEXT:
            raise SlackError("msg_too_long")
        if markdown:
            message.update(text=markdown, format="markdown")
        elif text is not None:
            message.update(text=text, format="mrkdwn")
        if blocks is not None:  # omitted: the message keeps its blocks; [] removes them
            message["blocks"] = blocks
        if (metadata := self._metadata(params.get("metadata"))) is not None:
            message["metadata"] = metadata
        message["edited"] = {"user": self.s.bot_user_id, "ts": self.state.next_ts()}
        self.state.changed()
        self._show(channel, message)
        return {"channel": channel, "ts": message["ts"], "text": message["text"],
                "message": self.state.for_api(message)}

    def api_chat_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, message = self._own(params, "cant_delete_message")
        removed, changed = self.state.delete(channel, message["ts"])
        if removed:
            self.s.push({"type": "message_deleted", "channel": channel, "ts": message["ts"]})
        if changed is not None and self.state.get(channel, changed["ts"]) is not None:
            self._show(channel, changed)
        elif changed is not None:  # a tombstone whose last reply went: gone too
            self.s.push({"type": "message_deleted", "channel": channel, "ts": changed["ts"]})
        return {"channel": channel, "ts": message["ts"]}

    def api_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        if params.get("user") not in (ME,):
            raise SlackError("user_not_in_channel")
        text, markdown = message_text(params)
        blocks = self._blocks(params.get("blocks"))
        thread = self._thread(channel, params.get("thread_ts"))
        ts = self.s.ephemeral(channel, text=text, fmt="markdown" if markdown else "mrkdwn",
                              blocks=blocks, thread_ts=thread)
        return {"message_ts": ts}

    def api_chat_getPermalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, message = self._message(params, "message_ts")
        link = f"{self.s.base_url}/archives/{channel}/p{message['ts'].replace('.', '')}"  # the page opens it
        if self.state.is_reply(message):
            link += f"?thread_ts={message['thread_ts']}&cid={channel}"
        return {"channel": channel, "permalink": link}

    # -- streaming -------------------------------------------------------------------------

    def api_chat_startStream(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        if not params.get("thread_ts"):
            raise SlackError("invalid_arguments")
        if not self.state.channels[channel]["is_im"]:
            if not params.get("recipient_team_id"):
                raise SlackError("missing_recipient_team_id")
            if not params.get("recipient_user_id"):
                raise SlackError("missing_recipient_user_id")
        text = stream_text(params)
        thread = self._thread(channel, params["thread_ts"])
        message, parent = self.state.add(channel, user=self.s.bot_user_id, bot=True, text=text, fmt="markdown",
                                         thread_ts=thread, streaming=True)
        self._show(channel, message, parent)
        self._replied(channel, thread)
        return {"channel": channel, "ts": message["ts"]}

    def _streaming(self, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        channel, message = self._own(params, "message_not_owned_by_app")
        if not message.get("streaming"):
            raise SlackError("message_not_in_streaming_state")
        return channel, message

    def _append(self, message: dict[str, Any], params: dict[str, Any]) -> None:
        text = message.get("text", "") + stream_text(params)
        if len(text) > MAX_TEXT:
            raise SlackError("msg_too_long")
        message["text"] = text

    def api_chat_appendStream(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, message = self._streaming(params)
        if not (params.get("markdown_text") or params.get("chunks")):
            raise SlackError("invalid_arguments")
        self._append(message, params)
        self.state.changed()
        self._show(channel, message)
        return {"channel": channel, "ts": message["ts"]}

    def api_chat_stopStream(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, message = self._streaming(params)
        blocks = self._blocks(params.get("blocks"))
        metadata = self._metadata(params.get("metadata"))
        self._append(message, params)
        if blocks is not None:
            message["blocks"] = blocks
        if metadata is not None:
            message["metadata"] = metadata
        message["streaming"] = False
        self.state.changed()
        self._show(channel, message)
        return {"channel": channel, "ts": message["ts"], "message": self.state.for_api(message)}

    # -- reactions -------------------------------------------------------------------------

    def _react(self, params: dict[str, Any], add: bool) -> dict[str, Any]:
        channel, message = self._message(params, "timestamp")
        name = str(params.get("name") or "").strip(":")
        if not name:
            raise SlackError("invalid_name")
        if not self.state.toggle_reaction(message, name, self.s.bot_user_id, add):
            raise SlackError("already_reacted" if add else "no_reaction")
        self._show(channel, message)
        return {}

    def api_reactions_add(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._react(params, True)

    def api_reactions_remove(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._react(params, False)

    # -- views -----------------------------------------------------------------------------

    def issue_trigger(self) -> str:
        now = time.time()
        self.triggers = {t: at for t, at in self.triggers.items() if now - at < 60}
        trigger = f"{int(now)}.{self._next_id()}.{uuid.uuid4().hex[:16]}"
        self.triggers[trigger] = now
        return trigger

    def _take_trigger(self, trigger_id: Any) -> None:
        issued = self.triggers.pop(str(trigger_id or ""), None)
        if issued is None:
            raise SlackError("invalid_trigger_id")
        if time.time() - issued > TRIGGER_SECONDS:
            raise SlackError("expired_trigger_id")

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def _view(self, view: Any, kind: str, view_id: str | None = None) -> dict[str, Any]:
        if not isinstance(view, dict) or view.get("type") != kind:
            raise SlackError("invalid_arguments")
        blocks = self._blocks(view.get("blocks") or [], MAX_VIEW_BLOCKS)
        view_id = view_id or f"V_PLAY{self._next_id():04d}"
        return {"team_id": self.s.team_id, "app_id": APP_ID, "bot_id": self.s.bot_id,
                "callback_id": "", "private_metadata": "", "external_id": "", "state": {"values": {}},
                "root_view_id": view_id, "previous_view_id": None, "clear_on_close": False,
                "notify_on_close": False, **view, "id": view_id, "hash": uuid.uuid4().hex, "blocks": blocks}

    def api_views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("view"):
            raise SlackError("invalid_arguments")
        self._take_trigger(params.get("trigger_id"))
        view = self._view(params["view"], "modal")
        self.views[view["id"]] = view
        self.s.push({"type": "view", "view": view})
        return {"view": view}

    def api_views_push(self, params: dict[str, Any]) -> dict[str, Any]:
        result = self.api_views_open(params)
        previous = next((v for v in reversed(self.views.values()) if v["id"] != result["view"]["id"]), None)
        if previous is not None:
            result["view"].update(root_view_id=previous["root_view_id"], previous_view_id=previous["id"])
        return result

    def api_views_update(self, params: dict[str, Any]) -> dict[str, Any]:
        view_id = params.get("view_id") or next(
            (v["id"] for v in self.views.values() if params.get("external_id")
             and v.get("external_id") == params["external_id"]), None)
        if view_id not in self.views:
            if self.state.home is not None and view_id == self.state.home.get("id"):
                return self._publish(params.get("view"), self.state.home["id"])
            raise SlackError("not_found")
        if params.get("hash") and params["hash"] != self.views[view_id]["hash"]:
            raise SlackError("hash_conflict")
        view = self._view(params.get("view"), "modal", view_id)
        view.update(root_view_id=self.views[view_id]["root_view_id"],
                    previous_view_id=self.views[view_id]["previous_view_id"])
        self.views[view_id] = view
        self.s.push({"type": "view", "view": view})
        return {"view": view}

    def api_views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("user_id"):
            raise SlackError("invalid_arguments")
        if params["user_id"] != ME:
            raise SlackError("user_not_found")
        home = self.state.home or {}
        if params.get("hash") and params["hash"] != home.get("hash"):
            raise SlackError("hash_conflict")
        return self._publish(params.get("view"), home.get("id"))

    def _publish(self, view: Any, view_id: str | None) -> dict[str, Any]:
        self.state.home = self._view(view, "home", view_id)
        self.state.changed()
        self.s.push({"type": "home", "view": self.state.home})
        return {"view": self.state.home}

    # -- assistant -------------------------------------------------------------------------
    # On an assistant thread (the pane), what the bot sets is kept and shown in the pane; on any
    # other thread it is accepted and has nothing to show.

    def _assistant(self, params: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        channel = self._channel(params, "channel_id")
        if not params.get("thread_ts"):
            raise SlackError("invalid_arguments")
        return channel, self.state.pane(channel, str(params["thread_ts"]))

    def _set(self, pane: dict[str, Any] | None, **changes: Any) -> None:
        if pane is not None:
            pane.update(changes)
            self.state.changed()
            self.s.show_pane(pane)

    def _replied(self, channel: str, thread: str | None) -> None:
        """The app answered in a thread: Slack clears the thread's status."""
        pane = self.state.pane(channel, thread)
        if pane is not None and pane.get("status"):
            self._set(pane, status="")

    def api_assistant_threads_setStatus(self, params: dict[str, Any]) -> dict[str, Any]:
        _, pane = self._assistant(params)
        self._set(pane, status=str(params.get("status") or ""))
        return {}

    def api_assistant_threads_setTitle(self, params: dict[str, Any]) -> dict[str, Any]:
        _, pane = self._assistant(params)
        if not params.get("title"):
            raise SlackError("invalid_arguments")
        self._set(pane, title=str(params["title"]))
        return {}

    def api_assistant_threads_setSuggestedPrompts(self, params: dict[str, Any]) -> dict[str, Any]:
        _, pane = self._assistant(params)
        prompts = params.get("prompts")
        if not isinstance(prompts, list) or not 0 < len(prompts) <= 4:
            raise SlackError("invalid_arguments")
        shown = [{"title": str(p.get("title") or p.get("message") or ""), "message": str(p.get("message") or "")}
                 for p in prompts if isinstance(p, dict)]
        self._set(pane, prompts=shown, prompts_title=str(params.get("title") or "") or None)
        return {}
