"""Who may use the playground: only you, from this machine unless you say otherwise.

The playground acts as you: it reads your conversations, posts, votes and corrects in your
name, and all of it is logged and ends up in ``flywheel export``. Two checks, on every route
of its one aiohttp app (the page, its API and socket, the bot's own endpoint, unknown paths):

- **Host.** A request must name this machine (``127.0.0.1``, ``localhost``, ``[::1]``, any
  port) or the ``--host`` it was started with. This is what stops DNS rebinding: a web page
  at ``evil.example`` whose name its owner then points at 127.0.0.1 is, for the browser, the
  same origin as the playground, so Origin checks let it through; but its requests still say
  ``Host: evil.example``. Listening on every interface (``0.0.0.0``, ``::``), other machines
  reach it by this machine's IP address or host name, so those are accepted too (an IP
  address cannot be rebound: a page at an IP address is served by whoever has it).
- **Token.** Beyond this machine (a ``--host`` that is not a loopback address), every
  request must also carry the run's random token: ``?token=`` in the URL ``flywheel dev``
  prints (which sets an HttpOnly, SameSite=Strict cookie and, for the page, redirects to
  drop it from the address bar), the cookie, or the ``X-Playground-Token`` header. Only the
  routes that carry a secret of their own are left to it: ``POST /slack/events`` (signed with
  the run's signing secret), ``/api/*`` (the run's bot token) and ``/playground/response/*``
  (unguessable ids); the bot calls those itself.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})
TOKEN_HEADER = "X-Playground-Token"
TOKEN_QUERY = "token"
# Routes that check a secret of their own (see the module docstring); the Host check still applies.
OWN_SECRET_PATHS = frozenset({"/slack/events"})
OWN_SECRET_PREFIXES = ("/api/", "/playground/response/")
HOST_REFUSED = ("refused: the playground answers only to requests addressed to this machine "
                "(127.0.0.1, localhost, [::1]) or to the --host it was started with")
TOKEN_REFUSED = ("refused: this playground listens beyond this machine and needs its token: "
                 "open the URL that `flywheel dev` printed (it ends in ?token=…)")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps the playground on this machine."""
    name = _bare(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


@dataclass(frozen=True)
class Access:
    """The checks for a playground listening on ``host``; ``token`` None: no token needed."""

    host: str = "127.0.0.1"
    token: str | None = field(default=None, repr=False)
    names: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = set(LOOPBACK_NAMES) | {_bare(self.host)}
        if self.listens_everywhere:
            names |= {_bare(n) for n in _machine_names()}
        object.__setattr__(self, "names", frozenset(n for n in names if n))

    @classmethod
    def for_host(cls, host: str) -> Access:
        """Loopback: no token. Anything else: a new random token for this run."""
        return cls(host=host, token=None if is_loopback(host) else secrets.token_urlsafe(24))

    @property
    def listens_everywhere(self) -> bool:
        return _bare(self.host) in WILDCARDS

    def host_allowed(self, host_header: str | None) -> bool:
        if not host_header:
            return False
        name = _bare(host_header)
        if name in self.names:
            return True
        if self.listens_everywhere:  # other machines use this one's address
            try:
                ipaddress.ip_address(name)
                return True
            except ValueError:
                return False
        return False

    def token_matches(self, given: str | None) -> bool:
        return self.token is not None and given is not None and \
            hmac.compare_digest(given.encode(), self.token.encode())

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.host_allowed(request.headers.get("Host")):
            return _refuse(request, HOST_REFUSED)
        if self.token is None or request.path in OWN_SECRET_PATHS or request.path.startswith(OWN_SECRET_PREFIXES):
            return await handler(request)
        cookie = cookie_name(request.headers["Host"])
        in_query = self.token_matches(request.query.get(TOKEN_QUERY))
        if not (in_query or self.token_matches(request.headers.get(TOKEN_HEADER))
                or self.token_matches(request.cookies.get(cookie))):
            return _refuse(request, TOKEN_REFUSED)
        if in_query and request.method == "GET" and request.path == "/":
            rest = request.rel_url.without_query_params(TOKEN_QUERY)  # the token leaves the address bar
            response: web.StreamResponse = web.Response(status=303, headers={"Location": str(rest)})
        else:
            response = await handler(request)
        if in_query and not response.prepared:
            response.set_cookie(cookie, self.token or "", path="/", httponly=True, samesite="Strict")
        return response


def cookie_name(host_header: str) -> str:
    """One cookie per port the browser sees (cookies ignore ports: two playgrounds would share one)."""
    port = host_header.rpartition(":")[2] if host_header.rpartition(":")[2].isdigit() else "80"
    return f"flywheel_playground_{port}"


def _bare(host: str) -> str:
    """``[::1]:3000`` → ``::1``; ``LocalHost.:3000`` → ``localhost``; a bare IPv6 address as is."""
    text = host.strip().lower()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    return text.rstrip(".")


def _machine_names() -> set[str]:
    try:
        name = socket.gethostname()
    except OSError:
        return set()
    return {name, name.partition(".")[0]}


def _refuse(request: web.Request, reason: str) -> web.Response:
    if request.path.startswith(("/playground/", "/api/")) or request.path == "/healthz":
        return web.json_response({"ok": False, "error": reason}, status=403)
    return web.Response(status=403, text=reason + "\n")
