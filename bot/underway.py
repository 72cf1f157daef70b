"""Answers under way, noted on local disk, so that a crash does not lose them without a word.

A SIGTERM lets every answer finish or end in an apology and its row (`Conversation.shutdown`). A
crash (kill -9, out of memory, a machine that goes away) gives no such chance: the person who
asked waits for an answer that never comes, and the paid model call has no row. So the answer
to each Slack message is noted here when it starts (one append to a file, like the journal's:
microseconds, no database) and crossed off once its row is kept (in the journal, which takes it
from there). At the next start, whatever a process that is gone left noted and not crossed off
gets what a shutdown would have given it: an apology in its thread and an error row
(``error_type`` Interrupted), written once (the row's op id is the note's key, the one the
answer's own row would have had). What the answer shows while it runs is noted too (`shows`:
the open stream, the Thinking… note), so the apology ends that message instead of leaving it
half-written above a new one.

Files: ``<journal dir>/<id>.underway``, one per process, locked by ``<id>.underway.lock``
while the process runs; a file whose lock nobody holds is a dead process's, and is adopted.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bot.filelock import open_locked, try_lock

log = logging.getLogger(__name__)

SUFFIX = ".underway"


@dataclass(frozen=True)
class Orphan:
    """An answer a process that is gone started and never finished."""

    key: str  # the op id its row was to have
    channel_id: str
    thread_ts: str | None
    row: dict[str, Any]  # its CallLog as it stood when the answer started
    path: Path  # the file it was noted in
    at: float  # when it started (time.time())
    message: tuple[str, str] | None = None  # the stream or Thinking… note it left open (`delivery.Unfinished`)


class Underway:
    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self.path = self.directory / f"{uuid.uuid4().hex}{SUFFIX}"
        self._fd = -1
        self._lock_fd = -1
        self._open: set[str] = set()
        self._shows: dict[str, tuple[str, str] | None] = {}  # what `shows` last noted of each
        self._adopted: list[tuple[Path, int]] = []  # dead processes' files (and their locks) until forgotten

    def open(self) -> list[Orphan]:
        """Start this process's file; return what dead processes left unfinished (``forget`` them
        once each has its apology and row)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = open_locked(self.path.with_name(self.path.name + ".lock"))
        self._fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        orphans: list[Orphan] = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path == self.path:
                continue
            lock = try_lock(path.with_name(path.name + ".lock"))
            if lock is None:
                continue  # a running process holds it
            found = list(_unfinished(path))
            if not found:  # every answer it started had finished
                _remove(path, lock)
                continue
            log.warning("%d answer(s) were under way when a process stopped without shutting down "
                        "(%s): each gets an apology and its row", len(found), path.name)
            orphans.extend(found)
            self._adopted.append((path, lock))
        return orphans

    def settled(self, orphan: Orphan) -> None:
        """An adopted answer has its apology and row: a later start must not apologise again."""
        try:
            fd = os.open(orphan.path, os.O_WRONLY | os.O_APPEND)
            try:
                # On a line of its own: the dead process may have been cut off mid-line.
                os.write(fd, ("\n" + json.dumps({"done": orphan.key}) + "\n").encode())
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("could not mark %s as apologised for in %s (%s)", orphan.key, orphan.path, exc)

    def forget_adopted(self) -> None:
        """The adopted files' answers are dealt with: remove the files."""
        for path, lock in self._adopted:
            _remove(path, lock)
        self._adopted.clear()

    def started(self, key: str, *, channel_id: str, thread_ts: str | None, row: dict[str, Any]) -> None:
        """Note an answer that has started (best effort: a full disk only loses the note)."""
        self._write({"key": key, "at": time.time(), "channel": channel_id, "thread_ts": thread_ts, "row": row})
        self._open.add(key)

    def shows(self, key: str, message: tuple[str, str] | None) -> None:
        """The message of an answer under way that a crash now would leave unfinished (an open
        stream, the Thinking… note) changed: the apology then ends it, rather than leave it as it is."""
        if key in self._open and self._shows.get(key) != message:
            self._shows[key] = message
            self._write({"shows": key, "message": message})

    def finished(self, key: str) -> None:
        """Cross off an answer whose row is kept. With nothing left open the file starts over."""
        if key not in self._open:
            return
        self._open.discard(key)
        self._shows.pop(key, None)
        if self._open or not self._truncate():
            self._write({"done": key})

    def _truncate(self) -> bool:
        try:
            os.ftruncate(self._fd, 0)
            return True
        except OSError:
            return False

    def close(self) -> None:
        """At a shutdown every answer has finished or apologised: nothing is left to note."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            if not self._open:
                self.path.unlink(missing_ok=True)
        if self._lock_fd >= 0:
            if not self._open:
                self.path.with_name(self.path.name + ".lock").unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = -1
        for _, lock in self._adopted:
            os.close(lock)
        self._adopted.clear()

    def _write(self, item: dict[str, Any]) -> None:
        if self._fd < 0:
            return
        line = (json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        try:
            os.write(self._fd, line)
        except OSError as exc:
            log.warning("could not note an answer under way in %s (%s): a crash now would lose it "
                        "without an apology", self.path, exc)


def _unfinished(path: Path) -> Iterator[Orphan]:
    started: dict[str, Orphan] = {}
    try:
        raw = path.read_bytes()
    except OSError as exc:
        log.error("cannot read %s: %s", path, exc)
        return
    for line in raw.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue  # cut off by the crash
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("done"), str):
            started.pop(item["done"], None)
        elif isinstance(item.get("shows"), str):
            if (orphan := started.get(item["shows"])) is not None:
                message = item.get("message")
                shown = (message[0], message[1]) if (isinstance(message, list) and len(message) == 2
                                                     and all(isinstance(m, str) for m in message)) else None
                started[orphan.key] = replace(orphan, message=shown)
        elif isinstance(item.get("key"), str) and isinstance(item.get("row"), dict) and item.get("channel"):
            at = item.get("at")
            started[item["key"]] = Orphan(item["key"], item["channel"], item.get("thread_ts"), item["row"], path,
                                          at if isinstance(at, (int, float)) else _mtime(path))
    yield from started.values()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


def _remove(path: Path, lock_fd: int) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".lock").unlink(missing_ok=True)
    os.close(lock_fd)
