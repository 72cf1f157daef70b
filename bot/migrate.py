"""Migrating the schema of a database that a serving process is about to use, in a child process.

``flywheel run`` calls ``begin_upgrade(url)`` first thing: a quick look with the bare driver tells
whether the schema is at the newest revision; if not, ``python -m bot.migrate`` (this module)
migrates it while the parent goes on importing the rest of the bot. So the serving process never
imports Alembic, Mako and what they bring (~10 MB, measured), which it would otherwise keep for
as long as it runs; and the migration overlaps the start-up instead of following it.

The child reads the database URL as the first line on stdin, prints ``revision <id>`` and exits 0,
or prints ``error <one line>`` (the driver's first line, as ``flywheel db upgrade`` shows it; no
traceback, no URL) and exits 1.

This module imports nothing heavy: the parent uses it before SQLAlchemy is loaded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from bot.store import Store

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
PEEK_CONNECT_TIMEOUT = 2  # seconds; past it the child process finds out properly


def head_revision() -> str:
    """The newest migration's revision id, read from the files (without importing Alembic)."""
    revisions, parents = set(), set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        if found := re.search(r"^revision = ['\"](\w+)['\"]", source, re.M):
            revisions.add(found.group(1))
        if found := re.search(r"^down_revision = ['\"](\w+)['\"]", source, re.M):
            parents.add(found.group(1))
    [head] = revisions - parents
    return head


def in_memory(url: str) -> bool:
    """A SQLite database that lives and dies with its connection."""
    return url.startswith("sqlite") and (":memory:" in url or "mode=memory" in url
                                         or url.rstrip("/").endswith("sqlite:"))


def stored_revision(url: str) -> str | None:
    """The revision the database's schema is at, read with the bare driver (sqlite3, psycopg),
    before SQLAlchemy is imported. None when it has no schema, or when this quick look cannot tell
    (a URL with options, a server that does not answer): the child process then finds out, and
    reports any problem the way ``flywheel db upgrade`` does."""
    scheme, _, rest = url.partition("://")
    driver = scheme.split("+")[0]
    query = "SELECT version_num FROM alembic_version"
    try:
        if driver == "sqlite" and rest.startswith("/") and "?" not in rest:
            path = Path(rest[1:])  # sqlite:///relative.db, sqlite:////absolute.db
            if not path.is_file():
                return None
            with contextlib.closing(sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True,
                                                    timeout=PEEK_CONNECT_TIMEOUT)) as db:
                row = db.execute(query).fetchone()
        elif driver in ("postgresql", "postgres"):
            import psycopg  # the serving process imports it anyway, for its engine

            with psycopg.connect(f"postgresql://{rest}", connect_timeout=PEEK_CONNECT_TIMEOUT,
                                 autocommit=True) as conn:
                row = conn.execute(query).fetchone()
        else:
            return None
    except Exception:  # noqa: BLE001 - no schema yet, or no quick answer: the child finds out
        return None
    return str(row[0]) if row else None


class MigrationFailed(RuntimeError):
    """The child process could not migrate; the message is its one-line reason."""


class Migration:
    """A migration begun by ``begin_upgrade()``; ``await finished(store)`` for the revision reached."""

    def __init__(self, revision: str | None = None, child: asyncio.subprocess.Process | None = None,
                 found: str | None = None):
        self._revision = revision
        self._child = child
        self._found = found  # the revision the quick look saw (None: no schema, or it could not tell)

    async def finished(self, store: Store) -> str:
        """The revision the schema is at. A failure raises MigrationFailed with the child's reason.
        With no child and no revision (an in-memory database), ``store`` migrates here."""
        if self._child is not None:
            child, self._child = self._child, None
            self._revision = await _child_revision(child)
            if self._found is None:
                log.info("database schema created (revision %s)", self._revision)
            elif self._found != self._revision:
                log.info("database schema migrated from revision %s to %s", self._found, self._revision)
        if self._revision is None:
            self._revision = await store.upgrade()
        return self._revision


async def begin_upgrade(url: str) -> Migration:
    """Start migrating ``url``'s schema to the newest revision, unless it is there already. The URL
    goes to the child through its stdin, written at once (it fits the pipe, so the child gets it
    even while this process is busy importing); never on its command line, which any local user
    can read. The child's warnings go to our stderr."""
    if in_memory(url):
        return Migration()  # nobody else can reach it: the serving process migrates it
    head = head_revision()
    if (found := stored_revision(url)) == head:
        return Migration(head)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.migrate", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert child.stdin is not None
    child.stdin.write(url.encode() + b"\n")
    child.stdin.close()
    return Migration(child=child, found=found)


async def _child_revision(child: asyncio.subprocess.Process) -> str:
    assert child.stdout is not None
    try:
        out = await child.stdout.read()
        await child.wait()
    finally:
        if child.returncode is None:  # cancelled: the migration is one transaction, it rolls back
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
    result = out.decode(errors="replace").strip()
    if child.returncode == 0 and result.startswith("revision "):
        return result.removeprefix("revision ")
    raise MigrationFailed(result.removeprefix("error ") if result.startswith("error ")
                          else f"the migration process exited with code {child.returncode}")


async def _upgrade(url: str) -> str:
    from bot.store import Store

    store = Store(url)
    try:
        return await store.upgrade()
    finally:
        await store.close()


def main() -> int:
    """The child: migrate the database named on stdin."""
    from bot.errors import driver_reason

    url = sys.stdin.readline().strip()
    try:
        revision = asyncio.run(_upgrade(url))
    except Exception as exc:  # noqa: BLE001 - any driver error: one line for the parent
        print(f"error {driver_reason(exc)}", flush=True)
        return 1
    print(f"revision {revision}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
