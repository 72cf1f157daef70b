"""`flywheel export`: the logged calls, votes and corrections as training and eval datasets.

    examples(store, fmt, filters)   the valid rows of a format, streamed (no files)
    export(store, options)          files (or stdout), manifest, report on stderr
    add_arguments(parser), run(args, settings)    the command line

`bot.export_queries` selects, counts votes and dedupes in SQL; rows stream in call-id order,
so memory stays flat however many calls are logged, and the same database gives
byte-identical files. `bot.export_formats` builds, validates and scrubs each row.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from sqlalchemy.engine import make_url

from bot.errors import ConfigError, database_error
from bot.export_formats import (
    CHANNEL_IDS,
    CSV_COLUMNS,
    FORMATS,
    REDACTED,
    USER_IDS,
    Scrubber,
    candidate_rows,
    dumps,
    split_of,
    validate,
)
from bot.export_queries import Filters
from bot.progress import ProgressBar, is_terminal
from bot.store import Store

RATINGS = ("up", "down", "any")
SPLITS = ("train", "validation")
OPENAI_MIN_EXAMPLES = 10
BATCH = 500  # rows fetched at a time


@dataclass(frozen=True)
class Example:
    call_id: int
    input_hash: str
    row: Any  # a dict (JSONL formats) or a list of cells (csv)


@dataclass
class ExportResult:
    format: str
    counts: dict[str, int] = field(default_factory=dict)  # per split ("all" without --split)
    skipped: Counter[str] = field(default_factory=Counter)  # invalid candidates by reason
    files: list[dict[str, Any]] = field(default_factory=list)  # path, split, rows, sha256
    manifest: Path | None = None
    dms_left_out: int = 0  # calls in direct messages the selection drew on, left out (no --include-dms)

    @property
    def rows(self) -> int:
        return sum(self.counts.values())


# -- rows -------------------------------------------------------------------------------------


async def candidates(store: Store, fmt: str, filters: Filters) -> int:
    """How many query rows `examples` will read (what a progress bar counts)."""
    return await store.count_export_candidates(fmt, filters)


async def examples(store: Store, fmt: str, filters: Filters, *, redact: bool = False,
                   skipped: Counter[str] | None = None,
                   on_read: Callable[[int], None] | None = None) -> AsyncGenerator[Example, None]:
    """Stream the valid rows of ``fmt``; invalid candidates are counted in ``skipped``;
    ``on_read`` hears how many query rows have been read."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    skipped = Counter() if skipped is None else skipped
    scrub = Scrubber(await store.salt(), redact=redact)
    read = 0
    async with contextlib.aclosing(store.export_candidates(fmt, filters, batch=BATCH)) as batches:
        async for batch in batches:
            for rec in batch:
                read += 1
                if on_read is not None:
                    on_read(read)
                for row in candidate_rows(fmt, rec, scrub):
                    problem = validate(fmt, row)
                    if problem:
                        skipped[problem] += 1
                    else:
                        yield Example(rec.id, rec.input_hash, row)


# -- writing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportOptions:
    format: str
    filters: Filters = Filters()
    output: Path | None = None
    split: float | None = None  # fraction that goes to train
    redact: bool = False


def output_paths(output: Path, fmt: str, split: float | None) -> dict[str, Path]:
    """``data.jsonl`` → {"all": data.jsonl}; with a split, data.train.jsonl and data.validation.jsonl."""
    if split is None:
        return {"all": output}
    suffix = output.suffix or FORMATS[fmt].extension
    stem = output.with_suffix("") if output.suffix else output
    return {name: stem.with_name(f"{stem.name}.{name}{suffix}") for name in SPLITS}


def manifest_path(output: Path) -> Path:
    """``data.jsonl`` → ``data.manifest.json``."""
    stem = output.with_suffix("") if output.suffix else output
    return stem.with_name(f"{stem.name}.manifest.json")


class _Sink:
    """One output: lines in, bytes out, sha256 and row count kept."""

    def __init__(self, stream: IO[bytes], fmt: str):
        self.stream, self.fmt = stream, fmt
        self.sha, self.rows = hashlib.sha256(), 0
        if fmt == "csv":
            self._write(_csv_line(list(CSV_COLUMNS)))

    def add(self, row: Any) -> None:
        self._write(_csv_line(row) if self.fmt == "csv" else dumps(row) + "\n")
        self.rows += 1

    def _write(self, text: str) -> None:
        data = text.encode()
        self.sha.update(data)
        self.stream.write(data)


def _private_file(path: Path) -> tuple[IO[bytes], Path]:
    """A new temporary file beside ``path``, created readable and writable by its owner only
    (mode 0600, O_EXCL: no window in which others can open it); `os.replace` then puts it in
    place with that mode, whatever mode an earlier file at ``path`` had."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    return os.fdopen(fd, "wb"), Path(name)


def _csv_line(cells: list[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(cells)
    return buf.getvalue()


async def export(store: Store, options: ExportOptions, *, stdout: IO[bytes] | None = None,
                 stderr: IO[str] | None = None) -> ExportResult:
    """Write the dataset (files + manifest with ``options.output``, else ``stdout``); report on ``stderr``."""
    stderr = stderr or sys.stderr
    fmt, result = options.format, ExportResult(options.format)
    # Not over rows going to the same terminal: the bar would break into them.
    progress = ProgressBar("exporting", stream=stderr,
                           enabled=options.output is not None or stdout is not None or not is_terminal(sys.stdout))
    if progress.on:
        progress.total = await candidates(store, fmt, options.filters)
    if options.output is None:
        if options.split is not None:
            raise ConfigError(["--split needs --output FILE (it writes FILE.train and FILE.validation)"])
        sinks = {"all": _Sink(stdout or sys.stdout.buffer, fmt)}
        paths: dict[str, Path] = {}
    else:
        paths = output_paths(options.output, fmt, options.split)
        temps: dict[str, Path] = {}
        sinks = {}
        try:
            for key, path in paths.items():
                stream, temps[key] = _private_file(path)
                sinks[key] = _Sink(stream, fmt)
        except BaseException:
            for key, tmp in temps.items():
                if key in sinks:
                    sinks[key].stream.close()
                tmp.unlink(missing_ok=True)
            raise
    rows = examples(store, fmt, options.filters, redact=options.redact, skipped=result.skipped,
                    on_read=progress.update if progress.on else None)
    try:
        async with contextlib.aclosing(rows):
            async for ex in rows:
                key = "all" if options.split is None else split_of(ex.input_hash, options.split)
                sinks[key].add(ex.row)
        progress.close()
        if options.output is None:
            sinks["all"].stream.flush()
    except BaseException:
        progress.close()
        if options.output is not None:
            for key, tmp in temps.items():
                sinks[key].stream.close()
                tmp.unlink(missing_ok=True)
        raise
    if options.output is not None:  # complete files only: a failed export leaves the old ones
        for key, tmp in temps.items():
            sinks[key].stream.close()
            os.replace(tmp, paths[key])
    result.counts = {k: s.rows for k, s in sinks.items()}
    if not options.filters.include_dms:
        result.dms_left_out = await store.dms_left_out(options.filters, fmt)
    for key, path in paths.items():
        result.files.append({"path": path.name, "split": key, "rows": sinks[key].rows,
                             "sha256": sinks[key].sha.hexdigest()})
    if options.output is not None:
        result.manifest = manifest_path(options.output)
        manifest = _manifest(options, result, Scrubber(await store.salt()))
        stream, tmp = _private_file(result.manifest)
        try:
            with stream:
                stream.write((json.dumps(manifest, ensure_ascii=False, indent=2) + "\n").encode())
            os.replace(tmp, result.manifest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    _report(options, result, stderr)
    return result


def _manifest(options: ExportOptions, result: ExportResult, scrub: Scrubber) -> dict[str, Any]:
    fmt = FORMATS[options.format]
    try:
        version = metadata.version("flywheel")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
        version = "unknown"
    return {
        "format": fmt.name,
        "format_version": fmt.version,
        "description": fmt.description,
        "filters": {**options.filters.describe(), "channel": scrub.channel(options.filters.channel) or None},
        "selection": _SELECTION[options.format],
        "redact": options.redact,
        "user_ids": USER_IDS,
        "channel_ids": CHANNEL_IDS,
        "redacted": REDACTED if options.redact else "nothing (--redact not given)",
        "direct_messages": {"included": options.filters.include_dms, "left_out": result.dms_left_out,
                            "why": _DMS_INCLUDED if options.filters.include_dms else _DMS_LEFT_OUT},
        "split": None if options.split is None else {
            "train": options.split, "method": "sha256(input_hash) as a fraction of 2^64 < train → train"},
        "counts": result.counts,
        "skipped_invalid": dict(sorted(result.skipped.items())),
        "files": result.files,
        "flywheel_version": version,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


_DMS_LEFT_OUT = ("calls in direct messages (D… channels) and group DMs are private conversations and are left "
                 "out of every format unless --include-dms is given; left_out counts the calls the selection "
                 "would have drawn on")
_DMS_INCLUDED = "--include-dms: calls in direct messages and group DMs are included"
_FIT = "status ok, not excluded, finish_reason not length"
_SELECTION = {
    "openai-chat": f"{_FIT}; approved or corrected unless --rating/--include-unrated say otherwise; one call per "
                   "input (corrected, then approved, then newest); target: newest correction, else the answer",
    "eval": f"{_FIT}; as openai-chat; ideal: newest correction, else the answer; sample: the logged answer",
    "csv": f"{_FIT}; approved or corrected unless --rating/--include-unrated say otherwise; every selected call",
    "kto": f"{_FIT}; approved, corrected or net-down unless --rating/--include-unrated say otherwise; per input "
           "the best approved/corrected target (true) and the corrected-away or newest net-down answer (false)",
    "openai-dpo": f"{_FIT}; per input the best approved/corrected target preferred to the answer its correction "
                  "replaced, else to the newest net-down answer of the same input",
}


def _report(options: ExportOptions, result: ExportResult, stderr: IO[str]) -> None:
    def say(line: str) -> None:
        print(f"flywheel: {line}", file=stderr)

    if result.dms_left_out:
        say(f"left out {result.dms_left_out} call(s) in direct messages and group DMs (private conversations; "
            "--include-dms includes them)")
    if result.skipped:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(result.skipped.items()))
        say(f"skipped {sum(result.skipped.values())} invalid candidate(s) ({reasons})")
    if options.format == "openai-chat":
        train = result.counts.get("train", result.rows)
        if result.rows < OPENAI_MIN_EXAMPLES or train < OPENAI_MIN_EXAMPLES:
            what = "examples" if options.split is None else "training examples"
            say(f"warning: only {train} openai-chat {what}; OpenAI fine-tuning needs at least "
                f"{OPENAI_MIN_EXAMPLES} (about 50 recommended)")
    if options.output is not None:
        files = ", ".join(f"{f['path']} ({f['rows']})" for f in result.files)
        say(f"wrote {result.rows} {options.format} row(s): {files}; manifest {result.manifest}")


async def check_schema(store: Store) -> None:
    url = make_url(store.url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" \
            and not url.database.startswith("file:") and not Path(url.database).exists():
        raise ConfigError([f"DATABASE_URL: no database file at {url.database} (set DATABASE_URL to the bot's "
                           "database)"])
    try:
        revision = await store.revision()
    except Exception as exc:  # noqa: BLE001 - any driver error: one line, no traceback
        raise database_error("open", exc) from exc
    if revision is None:
        raise ConfigError(["DATABASE_URL: no Flywheel tables in this database (wrong DATABASE_URL, or run "
                           "`flywheel db upgrade` first)"])
