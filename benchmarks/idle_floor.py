"""How much of `flywheel run`'s idle memory is ours, and how much the libraries' it cannot serve without.

Each line is a fresh interpreter that imports a set of modules and prints its resident size
(``VmRSS``). "libraries" imports only the third-party modules the serving process needs before its
first answer: the HTTP server and Bolt, the Slack client, SQLAlchemy's asyncio engine and ORM with
the database's driver and dialect, Jinja2's sandbox for the prompt bodies, PyYAML for their front
matter and python-dotenv. "bot" then adds the serving process's own modules on top. The model SDK
is not among them: it is imported when the first answer starts.

    python benchmarks/idle_floor.py [--repeat 5]

The idle RSS that ``load.py --scenario startup`` reports is the "bot" line plus what the running
process holds (its connections, the event loop, the prompts): compare them.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

LIBRARIES = [
    "asyncio", "argparse", "json", "logging",
    "aiohttp", "aiohttp.web", "slack_bolt.async_app", "slack_bolt.adapter.aiohttp",
    "slack_sdk.web.async_client", "sqlalchemy", "sqlalchemy.ext.asyncio", "sqlalchemy.orm",
    "jinja2", "jinja2.sandbox", "yaml", "dotenv",
]
DRIVERS = {
    "sqlite": ["aiosqlite", "sqlalchemy.dialects.sqlite.aiosqlite"],
    "postgresql": ["psycopg", "sqlalchemy.dialects.postgresql.psycopg"],
}
OURS = ["bot.cli", "bot.migrate", "bot.app", "bot.server"]

PROBE = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
with open("/proc/self/status") as status:
    print(next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")))
"""


def rss_mb(modules: list[str]) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, *modules], check=True, capture_output=True, text=True)
    return int(out.stdout) / 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5, help="fresh interpreters per line; the median is shown")
    args = p.parse_args()
    rows = [("interpreter", "-", [])]
    for db, driver in DRIVERS.items():
        rows += [("libraries", db, LIBRARIES + driver), ("bot", db, LIBRARIES + driver + OURS)]
    print(f"{'imports':12s} {'database':11s} {'VmRSS (median)':>15s}  runs")
    for label, db, modules in rows:
        runs = [rss_mb(modules) for _ in range(args.repeat)]
        print(f"{label:12s} {db:11s} {statistics.median(runs):12.1f} MB  "
              f"[{min(runs):.1f}-{max(runs):.1f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
