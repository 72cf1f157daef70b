"""display_url: a URL as it may be printed, without the credentials it can carry."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.urls import display_url


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://flywheel:s3cret-pw@db.internal:5432/flywheel", "postgresql://db.internal:5432/flywheel"),
    ("postgres://u:p@h/db?sslmode=require&password=qs-pw", "postgres://h/db"),
    ("postgresql+psycopg://only-user@127.0.0.1/test", "postgresql+psycopg://127.0.0.1/test"),
    # SQLAlchemy takes everything up to the "@" as the password, "/" and "?" included.
    ("postgresql://app:pa/ss?wo#rd@db:5432/flywheel", "postgresql://db:5432/flywheel"),
    ("postgresql://app:p@ss@db/flywheel", "postgresql://db/flywheel"),
    ("postgresql://app/x:pw@db/flywheel", "postgresql://db/flywheel"),  # not a URL SQLAlchemy reads
    ("postgresql://u:p@db/flywheel?options=-c%20x@y", "postgresql://db/flywheel"),
    ("postgresql://u:p@h1:5432,h2:5432/db", "postgresql://h1:5432,h2:5432/db"),
    ("https://key:secret@llm.example/v1", "https://llm.example/v1"),
    ("https://x.openai.azure.com/openai/v1?api-key=azure-key", "https://x.openai.azure.com/openai/v1"),
    ("http://[::1]:11434/v1#frag", "http://[::1]:11434/v1"),
    ("http://localhost:11434/v1", "http://localhost:11434/v1"),
    ("sqlite:///flywheel.db", "sqlite:///flywheel.db"),
    ("sqlite:////var/data/flywheel.db?mode=ro", "sqlite:////var/data/flywheel.db"),
    ("flywheel.db", "flywheel.db"),
    ("", ""),
    (None, ""),
])
def test_credentials_and_queries_are_left_out(url, shown):
    assert display_url(url) == shown


def _text(exclude: str = "") -> st.SearchStrategy[str]:
    return st.text(st.characters(codec="utf-8", exclude_characters="\x00" + exclude), min_size=1, max_size=20)


@given(user=_text(":/@"), password=_text("@"), secret=_text(),
       host=st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True))
def test_no_user_password_or_query_is_ever_shown(user, password, secret, host):
    """Any user name and password SQLAlchemy would read (the password may hold "/", "?", "#")."""
    url = f"postgresql://{user}:{password}@{host}:5432/flywheel?password={secret}"
    assert display_url(url) == f"postgresql://{host}:5432/flywheel"
    assert display_url(f"postgresql://{user}@{host}/flywheel") == f"postgresql://{host}/flywheel"


def test_anything_at_all_is_shown_without_raising():
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert display_url(Unprintable()) == "(a URL that cannot be shown)"
    assert display_url(42) == "42"
