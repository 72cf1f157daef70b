"""URLs as a person may see them: where a server is, never how to log in to it.

``DATABASE_URL`` and ``OPENAI_BASE_URL`` can carry credentials: a user name and password
(``postgresql://app:PASSWORD@db:5432/flywheel``) or a key in the query string
(``https://x.openai.azure.com/v1?api-key=KEY``). Print or log :func:`display_url` of them,
never the setting itself.
"""

from __future__ import annotations

import re

# SQLAlchemy's reading: a user name, then a password that runs to the first "@" whatever it
# holds ("/", "?" and "#" too: base64 passwords have "/", and SQLAlchemy takes them unencoded).
_USERINFO = re.compile(r"[^:/]*:[^@]*@|[^:/@]*@")
_QUERY = re.compile(r"[?#]")


def display_url(url: object) -> str:
    """``url`` without user name, password, query string or fragment; never raises.

    ``postgresql://app:pw@db:5432/flywheel?sslmode=require`` → ``postgresql://db:5432/flywheel``;
    ``sqlite:///flywheel.db`` stays as it is; None or "" → "". Where it is unclear where the
    credentials end (an "@" in a path), more is left out rather than less.
    """
    try:
        text = "" if url is None else str(url).strip()
        scheme, sep, rest = text.partition("://")
        if not sep:  # not scheme://…: a path, or a malformed URL
            scheme, rest = "", text
        if not rest.startswith("/"):  # "scheme:///path" has no host, so no credentials
            if (userinfo := _USERINFO.match(rest)) is not None:
                rest = rest[userinfo.end():]
            before_query = _QUERY.split(rest, maxsplit=1)[0]
            rest = rest[before_query.rfind("@") + 1:]  # an "@" still there: drop all before it
        return scheme + sep + _QUERY.split(rest, maxsplit=1)[0]
    except Exception:  # noqa: BLE001 - a display helper must never be the thing that fails
        return "(a URL that cannot be shown)"
