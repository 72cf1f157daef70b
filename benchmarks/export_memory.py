"""Does `flywheel export` keep memory flat as the log grows?

Seeds N logged calls into a temporary SQLite database (bulk inserts through SQLAlchemy
core; realistic sizes: a ~1.5 kB system prompt, some thread history, ~1 kB answers;
votes on ~45% of calls, corrections on ~5%, regenerations, a few errors, truncations and
exclusions), then exports it in a fresh process per run and reports that process's peak
RSS (``resource.getrusage``) and, in a second run, the peak of Python allocations
(``tracemalloc``). Flat: the 100k peak is close to the 10k peak.

    python benchmarks/export_memory.py                    # 10k and 100k calls, openai-chat
    python benchmarks/export_memory.py --calls 1000 --formats openai-chat,kto,csv
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, insert

from bot.models import Call, Correction, Feedback
from bot.store import Store, input_hash

BATCH = 5000
SYSTEM = ("You are a helpful, concise teammate in a software engineering team's Slack. " * 20).strip()
WORDS = ["the", "deploy", "failed", "because", "the", "migration", "locked", "the", "table", "while", "the",
         "worker", "retried", "the", "job", "so", "we", "should", "add", "an", "index", "and", "batch", "the",
         "backfill", "before", "friday's", "release", "window"]


def text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def seed(db: Path, n: int, rng_seed: int = 7) -> None:
    """N calls (plus votes and corrections) in a new SQLite database at ``db``."""
    asyncio.run(_migrate(f"sqlite:///{db}"))
    rng = random.Random(rng_seed)
    engine = create_engine(f"sqlite:///{db}")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    previous: list[dict] = []
    with engine.begin() as conn:
        calls, votes, fixes = [], [], []
        for i in range(1, n + 1):
            if previous and rng.random() < 0.05:  # a regeneration: same input as the last call
                messages, parent = previous, i - 1
            else:
                history = [{"role": rng.choice(("user", "assistant")), "content": text(rng, rng.randint(30, 100))}
                           for _ in range(rng.randint(0, 4))]
                messages = [{"role": "system", "content": SYSTEM}, *history,
                            {"role": "user", "content": f"<@U{i:08d}X> " + text(rng, rng.randint(20, 60))}]
                parent = None
            previous = messages
            roll = rng.random()
            status, finish = ("error", None) if roll < 0.03 else ("truncated", "length") if roll < 0.04 else (
                "ok", "stop")
            calls.append({
                "id": i, "created_at": start + timedelta(seconds=30 * i), "trigger": "mention", "team_id": "T1",
                "channel_id": f"C{rng.randint(1, 20):04d}", "user_id": f"U{rng.randint(1, 500):08d}",
                "request_text": messages[-1]["content"], "prompt_name": rng.choice(("ask", "summarize")),
                "prompt_version": "a" * 64, "model": "gpt-5.4-mini", "options": {"max_tokens": 4000},
                "messages": messages, "input_hash": input_hash(messages), "status": status,
                "answer": "" if status == "error" else text(rng, rng.randint(80, 250)), "finish_reason": finish,
                "prompt_tokens": 900, "completion_tokens": 300, "cost_usd": 0.00042, "latency_ms": 1800,
                "parent_call_id": parent, "excluded": rng.random() < 0.01,
            })
            if rng.random() < 0.45:
                for voter in rng.sample(range(1, 50), rng.randint(1, 3)):
                    votes.append({"call_id": i, "user_id": f"U{voter:08d}", "source": "reaction",
                                  "name": "vote", "value": 1 if rng.random() < 0.7 else -1,
                                  "created_at": start, "updated_at": start})
            if rng.random() < 0.05:
                fixes.append({"call_id": i, "user_id": "U00000001", "text": text(rng, rng.randint(60, 200)),
                              "created_at": start})
            if len(calls) >= BATCH:
                _flush(conn, calls, votes, fixes)
        _flush(conn, calls, votes, fixes)
    engine.dispose()


def _flush(conn, calls: list, votes: list, fixes: list) -> None:
    for table, rows in ((Call.__table__, calls), (Feedback.__table__, votes), (Correction.__table__, fixes)):
        if rows:
            conn.execute(insert(table), rows)
            rows.clear()


async def _migrate(url: str) -> None:
    store = Store(url)
    await store.upgrade()
    await store.close()


def measure(db: Path, fmt: str, include_unrated: bool, trace: bool) -> dict:
    """Run in a fresh process: export ``db`` to a file; peak RSS / peak traced allocations."""
    from bot.export import ExportOptions, Filters, export

    async def go() -> dict:
        store = Store(f"sqlite:///{db}")
        await store.salt()
        before = _reset_peak_rss()
        if trace:
            tracemalloc.start()
        started = time.perf_counter()
        result = await export(store, ExportOptions(fmt, Filters(include_unrated=include_unrated),
                                                   output=db.with_name(f"out-{fmt}.jsonl")), stderr=io.StringIO())
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] if trace else 0
        await store.close()
        return {"rows": result.rows, "seconds": round(elapsed, 1), "rss_before_mb": before / 1024,
                "peak_rss_mb": _peak_rss_kb() / 1024, "tracemalloc_peak_mb": peak / 2**20}

    return asyncio.run(go())


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> int:
    """Reset the peak-RSS mark (Linux: /proc/self/clear_refs) so it covers the export alone;
    returns the current RSS in kB. Elsewhere the peak covers the whole process."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_rss_kb() -> int:
    return _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--formats", default="openai-chat")
    p.add_argument("--default-selection", action="store_true", help="no --include-unrated")
    p.add_argument("--measure", nargs=4, metavar=("DB", "FORMAT", "UNRATED", "TRACE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        db, fmt, unrated, trace = args.measure
        print(json.dumps(measure(Path(db), fmt, unrated == "1", trace == "1")))
        return
    print(f"{'calls':>8} {'format':<12} {'rows':>8} {'seconds':>8} {'RSS before':>11} {'peak RSS':>9} "
          f"{'tracemalloc peak':>17}")
    for n in args.calls:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "bench.db"
            started = time.perf_counter()
            seed(db, n)
            seeded = time.perf_counter() - started
            for fmt in args.formats.split(","):
                runs = []
                for trace in ("0", "1"):
                    cmd = [sys.executable, __file__, "--measure", str(db), fmt,
                           "0" if args.default_selection else "1", trace]
                    runs.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
                rss, traced = runs
                print(f"{n:>8} {fmt:<12} {rss['rows']:>8} {rss['seconds']:>8} {rss['rss_before_mb']:>8.1f} MB "
                      f"{rss['peak_rss_mb']:>6.1f} MB {traced['tracemalloc_peak_mb']:>14.1f} MB", flush=True)
            print(f"{'':>8} (seeded {n} calls in {seeded:.0f}s, database {db.stat().st_size / 2**20:.0f} MB)",
                  flush=True)


if __name__ == "__main__":
    main()
