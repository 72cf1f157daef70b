"""Exclusive locks on files, between processes (flock on POSIX, msvcrt on Windows)."""

from __future__ import annotations

import os


def lock(fd: int, *, wait: bool = False) -> None:
    """An exclusive lock on an open file, held until it is closed (or the process ends).
    Without ``wait``: OSError if another process (or another open file here) holds it. With
    it: blocks until the lock is free (call it off the event loop)."""
    try:
        import fcntl
    except ImportError:  # Windows: LK_LOCK retries for 10 s, then raises OSError
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        return
    fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)


def open_locked(path: str | os.PathLike[str], *, wait: bool = False) -> int:
    """Open (creating it, owner-only) and lock ``path``; returns the descriptor, whose closing
    releases the lock. OSError if it cannot be opened, or, without ``wait``, is locked."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        lock(fd, wait=wait)
    except BaseException:
        os.close(fd)
        raise
    return fd


def try_lock(path: str | os.PathLike[str]) -> int | None:
    """``open_locked`` without waiting: None when another process (or open file) holds the lock,
    e.g. a journal file whose owner is still running."""
    try:
        return open_locked(path)
    except OSError:
        return None
