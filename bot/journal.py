"""The journal: writes that must not be lost, kept on local disk until the database has them.

What a person did (a vote, an exclusion, a correction) and the row of a model call are
*ops*: small JSON objects with an id, a kind and the time they happened (``new_op``).

    keep(op)      appends the op as one line to this process's journal file: one write()
                  into the kernel's page cache, microseconds, no database and no network, so
                  it is safe to do before Slack gets its acknowledgement. From then on the op
                  survives the process crashing. (Only if that write fails, and then only
                  for a bounded time, is the database tried directly.)
    the writer    one task applies pending ops to the database in the order they were kept,
                  in batches (`Store.apply`), then appends a line marking them done. When the
                  database is slow or unreachable it fsyncs the file (a power cut loses
                  nothing either), reports a backlog and retries with backoff.
    exactly once  replaying an op never writes it twice: call rows and corrections carry the
                  op id in a unique column, and a vote carries the time it happened, so an
                  older one applied again never undoes a newer one.
    restart       each process holds a lock on its own file; a journal file that no running
                  process holds (left by a crash, or by a shutdown during an outage) is
                  adopted at start and its ops are applied before new ones.

Files: ``<directory>/<id>.jsonl`` and ``<id>.lock``; ops that the database refuses for good
(a bug, not an outage) go to ``dead.jsonl`` with the reason, and are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import FlywheelError
from bot.filelock import open_locked, try_lock

if TYPE_CHECKING:
    from bot.store import Store

log = logging.getLogger(__name__)

BATCH = 200  # ops applied in one transaction
SYNC_AFTER = 0.5  # seconds a database write may take before the backlog is fsynced
RETRY_MIN, RETRY_MAX = 0.5, 10.0  # backoff while the database is unreachable, seconds
DIRECT_WAIT = 2.0  # how long keep() tries the database itself when the file cannot be written
PARK_LIMIT = 900.0  # seconds a vote waits for the answer it is on to be recorded
MAX_BYTES = 1 << 30  # a journal file never grows past this (a long outage must not fill the disk)
ADOPT_EVERY = 60.0  # seconds between looks for journal files left by other processes


VOTES = ("reaction", "button")


def new_op(kind: str, *, key: str | None = None, **data: Any) -> dict[str, Any]:
    """An op of ``kind`` ("call", "reaction", "button", "correction"), happening now (or ``at=``
    a time given). ``key``: its id, when it must be known before (an answer's row: `bot.underway`)."""
    return {"id": key or uuid.uuid4().hex, "kind": kind, "at": time.time(), **data}


class NotKept(FlywheelError):
    """An op could be neither written to the journal nor stored in the database."""

    user_message = ("Sorry, I could not save that right now: my database is unreachable and my local "
                    "journal is full. Please try again in a few minutes.")


@dataclass
class _Entry:
    op: dict[str, Any]
    done: asyncio.Future[Any] | None  # None: nobody waits for it (adopted from another file)
    origin: Path | None = None  # the adopted file it came from; None: this process's own file
    kept_at: float = field(default_factory=time.monotonic)


class Journal:
    def __init__(self, directory: Path | str, store: Store, *, max_bytes: int = MAX_BYTES):
        self.directory = Path(directory)
        self.store = store
        self.max_bytes = max_bytes
        self.dead = 0  # ops the database refused for good
        self.failing_since: float | None = None  # monotonic time the database started failing
        self._pending: deque[_Entry] = deque()
        # Votes on a message whose answer is still being written (or whose row is still on its
        # way): applied again right after that answer's row.
        self._parked: list[_Entry] = []
        # Whether a message belongs to an answer still being written (set by the bot).
        self.answering: Callable[[str, str], bool] = lambda channel, ts: False
        self._adopted: dict[Path, int] = {}  # adopted file -> its ops still pending
        self._adopted_locks: dict[Path, int] = {}
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._started = False
        self._synced = True
        self._size = 0
        self._fd = -1
        self._lock_fd = -1
        self._adopt_at = 0.0
        self.path = self.directory / "pending.jsonl"

    # -- files -------------------------------------------------------------------------

    def open(self) -> None:
        """Create this process's journal file and adopt the files no running process holds."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        self._lock_fd = open_locked(self.directory / f"{name}.lock")
        self.path = self.directory / f"{name}.jsonl"
        self._fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        self._adopt()

    def _adopt(self) -> None:
        self._adopt_at = time.monotonic()
        for path in sorted(self.directory.glob("*.jsonl"), key=_age):
            if path == self.path or path.name == "dead.jsonl" or path in self._adopted:
                continue
            lock = try_lock(path.with_suffix(".lock"))
            if lock is None:
                continue  # a running process holds it
            if not path.exists():  # its owner removed it meanwhile
                _remove(path, lock)
                continue
            ops = read_pending(path)
            if not ops:
                _remove(path, lock)
                continue
            log.warning("journal: adopting %d op(s) from %s", len(ops), path.name)
            self._adopted[path] = len(ops)
            self._adopted_locks[path] = lock
            # Older than anything this process kept: they go first, in their own order.
            self._pending.extendleft(reversed([_Entry(op, None, origin=path) for op in ops]))

    def start(self) -> None:
        """Start writing to the database (once its schema is migrated: call after upgrade)."""
        self._started = True
        self._kick()

    async def close(self, timeout: float = 2.0) -> None:
        """Give the writer up to ``timeout`` seconds to empty the journal, then stop it.
        What is still pending stays on disk (fsynced) for the next start."""
        if self._pending and self._writer is not None and not self._writer.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(), timeout)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self._fd >= 0:
            if self.backlog:
                os.fsync(self._fd)
                log.warning("journal: %d op(s) not yet in the database are kept in %s for the next start",
                            self.backlog, self.path)
            os.close(self._fd)
            self._fd = -1
            if not any(e.origin is None for e in [*self._pending, *self._parked]):
                self.path.unlink(missing_ok=True)
                self.path.with_suffix(".lock").unlink(missing_ok=True)
        for lock in self._adopted_locks.values():
            os.close(lock)
        self._adopted_locks.clear()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        with contextlib.suppress(OSError):  # the folder goes too, when nothing is left in it
            self.directory.rmdir()

    async def _drained(self) -> None:
        while self._pending:
            await asyncio.sleep(0.02)

    # -- keeping ops -------------------------------------------------------------------

    async def keep(self, op: dict[str, Any]) -> asyncio.Future[Any]:
        """Keep ``op`` until the database has it; returns a future of its result there.

        Normally one append to the local file (no waiting on the database). If the file
        cannot be written, the database is tried directly for up to ``DIRECT_WAIT`` seconds;
        if that fails too, raises `NotKept`: the caller must tell the person."""
        try:
            self._append(op)
        except OSError as exc:
            log.error("journal: cannot write %s (%s); trying the database directly", self.path, exc)
            try:
                [result] = await within(self.store.apply([op], deadline=time.monotonic() + DIRECT_WAIT),
                                        DIRECT_WAIT)
            except Exception as db_exc:  # noqa: BLE001 - any failure: the op is not kept
                raise NotKept(f"journal: {exc}; database: {type(db_exc).__name__}") from db_exc
            future = _future()
            future.set_result(result)
            return future
        done = _future()
        self._pending.append(_Entry(op, done))
        self._kick()
        return done

    def _append(self, op: dict[str, Any]) -> None:
        line = (json.dumps(op, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        if self._fd < 0:
            raise OSError("the journal is not open")
        if self._size + len(line) > self.max_bytes:
            raise OSError(f"the journal is full ({self.max_bytes:,} bytes)")
        written = os.write(self._fd, line)
        if written != len(line):  # the disk filled up midway: take the torn line back
            os.ftruncate(self._fd, self._size)
            raise OSError(f"only {written} of {len(line)} bytes written")
        self._size += len(line)
        self._synced = False

    @staticmethod
    async def result(future: asyncio.Future[Any], timeout: float) -> Any:
        """The op's result in the database, or None if it is not there within ``timeout``."""
        done, _ = await asyncio.wait({future}, timeout=timeout)
        return future.result() if done else None

    # -- what is waiting -------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        return len(self._pending) + len(self._parked)

    @property
    def oldest_seconds(self) -> float:
        oldest = min((e.kept_at for e in [*list(self._pending)[:1], *self._parked]), default=None)
        return round(time.monotonic() - oldest, 1) if oldest is not None else 0.0

    def pending(self, kind: str) -> Iterator[dict[str, Any]]:
        """Ops of ``kind`` not yet in the database, oldest first (e.g. calls whose rows are
        still on their way, so that a follow-up or a vote can already find them)."""
        return (e.op for e in list(self._pending) if e.op["kind"] == kind)

    # -- the writer ----------------------------------------------------------------------

    def _kick(self) -> None:
        if not self._started:
            return
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        self._wakeup.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write(), name="journal-writer")

    async def _write(self) -> None:
        assert self._wakeup is not None
        delay = RETRY_MIN
        while True:
            if not self._pending:
                self._compact()
                if time.monotonic() - self._adopt_at > ADOPT_EVERY:
                    self._adopt()
                    continue
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), ADOPT_EVERY)
                continue
            batch = [self._pending[i] for i in range(min(BATCH, len(self._pending)))]
            try:
                results = await self._apply(batch)
            except Exception as exc:  # noqa: BLE001 - classified below
                if not self.store.is_unavailable(exc):
                    await self._one_by_one(batch)
                    continue
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                    log.warning("journal: the database is unreachable (%s); %d op(s) kept on disk, retrying",
                                type(exc).__name__, len(self._pending))
                await self._sync()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            if self.failing_since is not None:
                log.warning("journal: the database is back after %.0fs; writing %d op(s)",
                            time.monotonic() - self.failing_since, len(self._pending))
                self.failing_since = None
            delay = RETRY_MIN
            self._finish(batch, results)

    async def _apply(self, batch: list[_Entry]) -> list[Any]:
        """Apply a batch; fsync the journal if the database is slow about it."""
        task = asyncio.ensure_future(self.store.apply([e.op for e in batch]))
        try:  # asyncio.wait, not await: stopping the writer must not cancel a database call midway
            done, _ = await asyncio.wait({task}, timeout=SYNC_AFTER)
            if not done:
                await self._sync()
                await asyncio.wait({task})
        except asyncio.CancelledError:
            task.add_done_callback(_consume)
            raise
        return task.result()

    async def _one_by_one(self, batch: list[_Entry]) -> None:
        """A batch the database refused: find the op(s) it will never take, and set them aside."""
        for entry in batch:
            for attempt in range(2):  # a second try: another process may have raced us to a row
                try:
                    [result] = await self._apply([entry])
                except Exception as exc:  # noqa: BLE001
                    if self.store.is_unavailable(exc):
                        return  # an outage after all: the writer retries the rest in order
                    if attempt:
                        self._bury(entry, exc)
                    continue
                self._finish([entry], [result])
                break

    def _finish(self, batch: list[_Entry], results: list[Any]) -> None:
        recorded = {(op["log"]["channel_id"], ts) for op in (e.op for e in batch) if op["kind"] == "call"
                    for ts in op["log"]["message_ts"]}
        done, again = [], []
        for entry, result in zip(batch, results, strict=True):
            popped = self._pending.popleft()
            assert popped is entry
            if result is None and entry.op["kind"] in VOTES:  # its message is not a known answer yet
                where = (entry.op["channel"], entry.op["ts"])
                if where in recorded:  # its answer's row came right after it
                    again.append(entry)
                    continue
                if self.answering(*where) or where in self._pending_messages():
                    self._parked.append(entry)
                    continue
            if entry.done is not None and not entry.done.done():
                entry.done.set_result(result)
            done.append(entry)
        now = time.monotonic()
        for entry in list(self._parked):  # answers recorded now: their votes go next, in order
            if (entry.op["channel"], entry.op["ts"]) in recorded:
                self._parked.remove(entry)
                again.append(entry)
            elif now - entry.kept_at > PARK_LIMIT:  # its answer never got a row: nothing to attach it to
                self._parked.remove(entry)
                log.warning("journal: a vote waited %.0fs for its answer's row; dropped", now - entry.kept_at)
                if entry.done is not None and not entry.done.done():
                    entry.done.set_result(None)
                done.append(entry)
        self._pending.extendleft(reversed(sorted(again, key=lambda e: e.op["at"])))
        self._mark_done(done)

    def _pending_messages(self) -> set[tuple[str, str]]:
        return {(op["log"]["channel_id"], ts) for op in self.pending("call") for ts in op["log"]["message_ts"]}

    def _bury(self, entry: _Entry, exc: Exception) -> None:
        log.error("journal: the database refused op %s (%s) for good: %s; kept in %s", entry.op["id"],
                  entry.op["kind"], type(exc).__name__, self.directory / "dead.jsonl", exc_info=exc)
        self.dead += 1
        fd = os.open(self.directory / "dead.jsonl", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        with open(fd, "a", encoding="utf-8") as dead:  # it holds what people wrote: owner only
            dead.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:2000], "op": entry.op},
                                  ensure_ascii=False) + "\n")
        popped = self._pending.popleft()
        assert popped is entry
        if entry.done is not None and not entry.done.done():
            entry.done.set_result(None)
        self._mark_done([entry])

    def _mark_done(self, entries: list[_Entry]) -> None:
        own = [e.op["id"] for e in entries if e.origin is None]
        if own:
            with contextlib.suppress(OSError):  # at worst the ops are applied again: that is harmless
                self._append({"done": own})
        for entry in entries:
            if entry.origin is not None:
                self._adopted[entry.origin] -= 1
                if not self._adopted[entry.origin]:
                    del self._adopted[entry.origin]
                    _remove(entry.origin, self._adopted_locks.pop(entry.origin))
                    log.info("journal: every op of %s is in the database", entry.origin.name)

    async def _sync(self) -> None:
        if not self._synced and self._fd >= 0:
            self._synced = True
            await asyncio.to_thread(os.fsync, self._fd)

    def _compact(self) -> None:
        """Nothing pending: start the file afresh (O_APPEND writes then begin at 0). A file
        with ops pending only grows while the database is away, and ``max_bytes`` caps it."""
        if self._size and self._fd >= 0 and not self._pending:
            os.ftruncate(self._fd, 0)
            self._size = 0


def read_pending(path: Path) -> list[dict[str, Any]]:
    """The ops in a journal file that are not marked done, in order. A torn last line (the
    process died mid-write) or a garbled one is skipped with a warning."""
    ops: dict[str, dict[str, Any]] = {}
    try:
        raw = path.read_bytes()
    except OSError as exc:
        log.error("journal: cannot read %s: %s", path, exc)
        return []
    for number, line in enumerate(raw.splitlines(), 1):
        try:
            item = json.loads(line)
        except ValueError:
            log.warning("journal: %s:%d is not a whole entry (cut off by a crash?); skipped", path.name, number)
            continue
        if isinstance(item, dict) and isinstance(item.get("done"), list):
            for op_id in item["done"]:
                ops.pop(op_id, None)
        elif isinstance(item, dict) and isinstance(item.get("id"), str) and isinstance(item.get("kind"), str):
            ops[item["id"]] = item
    return list(ops.values())


async def within(awaitable: Any, seconds: float) -> Any:
    """Await with a time limit, without cancelling the work when the limit passes (a
    cancelled database call can hang in its own cleanup): TimeoutError, and the work
    finishes, or fails, on its own."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.add_done_callback(_consume)
        raise TimeoutError(f"no answer within {seconds:g}s")
    return task.result()


def _future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" at exit


def _age(path: Path) -> float:
    """Oldest first (a file removed meanwhile by its owner sorts last, and is then skipped)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")


def _remove(path: Path, lock_fd: int) -> None:
    path.unlink(missing_ok=True)
    path.with_suffix(".lock").unlink(missing_ok=True)
    os.close(lock_fd)
