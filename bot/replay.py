"""`flywheel replay`: run a candidate prompt on real logged inputs and score it against their references.

    flywheel replay ask --candidate my-ask.prompty --judge judge --report r.html

Inputs (`bot.replay_inputs`): logged Slack calls of the prompt that have a reference (the
newest correction, else an approved answer), as `flywheel export` selects them; or an eval file
(``--on``). The candidate (default: the prompt's current file) is rendered with each input's text
and conversation, and sent through `Conversation.answer` like any answer, but to no Slack
message: each call is logged with source ``replay`` (so `flywheel stats` and exports leave it
out unless asked), its version saved, and linked to the call it replays (``parent_call_id``).

Scoring: the checks the candidate's file declares (`bot.checks`) on both answers, and, with
``--judge``, a pairwise judge prompt (`bot.judge`) that sees the request and both answers, the
candidate's first for a random half of the inputs. Win rate = (wins + ties/2) / judged, with a
95 % Wilson interval. Model failures are counted, never fatal. Ctrl-C starts nothing new, lets
what is in flight finish for a few seconds, and writes what ran (marked partial); exit 130.

Exit status: 0 when the run finished (whatever the verdict), 1 on bad arguments or files,
2 on bad settings (as every command), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from bot.checks import Check, checks_of
from bot.errors import ConfigError, PromptError
from bot.export import check_schema
from bot.export_cli import when_option
from bot.export_queries import Filters
from bot.figures import wilson_interval
from bot.judge import check_judge, judge_messages, outcome, positions, verdict
from bot.models import ANSWERED, Trigger
from bot.progress import INTERVAL as PROGRESS_INTERVAL
from bot.progress import ProgressBar
from bot.prompts import Prompt, PromptSet, load_file, short_version
from bot.replay_inputs import Input, InputError, from_eval, from_log
from bot.reports import add_traffic_arguments
from bot.settings import Settings
from bot.store import Store

if TYPE_CHECKING:  # the Slack side is imported when a replay runs, not for every `flywheel` command
    from bot.conversation import Conversation

DEFAULT_CONCURRENCY = 8
GRACE = 3.0  # seconds in-flight calls may finish after Ctrl-C


class BadArguments(Exception):
    """Exit 1, saying why: each line after "flywheel: ", or, for problems in files, as
    ``path:line: reason``."""

    def __init__(self, *lines: str, located: bool = False):
        self.lines = [line if located else f"flywheel: {line}" for line in lines]
        super().__init__("; ".join(lines))

    @classmethod
    def at(cls, problems: list[PromptError]) -> BadArguments:
        return cls(*map(str, problems), located=True)


@dataclass
class Plan:
    prompt: str
    candidate: Prompt
    model: str
    checks: list[Check]
    judge: Prompt | None = None
    judge_model: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    seed: int = 0
    inputs_from: str = "log"  # "log", or the eval file


@dataclass
class Result:
    """One input's run."""

    input: Input
    position: str  # where the judge sees the candidate's answer: "A" or "B"
    status: str = "not_run"  # answered | error | not_run (never started, or interrupted)
    phase: str = "queued"  # queued | candidate | judge_queued | judge | done
    call_id: int | None = None
    answer: str = ""
    error: str | None = None
    cost_usd: float | None = None
    latency_ms: int | None = None
    checks: list[bool] = field(default_factory=list)
    reference_checks: list[bool] = field(default_factory=list)
    judge_call_id: int | None = None
    verdict: str | None = None  # what the judge said: A, B or tie
    outcome: str | None = None  # the candidate's: win, tie or loss
    judge_error: str | None = None
    judge_cost_usd: float | None = None


class _Unposted:
    """Where a replayed answer goes: nowhere. Its call row keeps it; nothing reaches Slack."""

    def __init__(self) -> None:
        self.message_ts: list[str] = []

    async def write(self, delta: str) -> None:
        return None

    async def finish(self, note: str | None = None, blocks: list[dict] | None = None,
                     metadata: dict | None = None) -> None:
        return None


# -- running --------------------------------------------------------------------------------


class Runner:
    def __init__(self, conversation: Conversation, plan: Plan, *, on_change: Callable[[], None] = lambda: None):
        self.conversation = conversation
        self.store = conversation.store
        self.plan = plan
        self.on_change = on_change
        self.results: list[Result] = []
        self.partial = False
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()

    def interrupt(self) -> None:
        """Ctrl-C: start nothing new (a second one: stop what is in flight too)."""
        if self._stop.is_set():
            self._hurry.set()
        self._stop.set()

    async def run(self, inputs: list[Input]) -> list[Result]:
        where = positions(len(inputs), self.plan.seed)
        self.results = [Result(inp, where[i]) for i, inp in enumerate(inputs)]
        calls, judging = asyncio.Semaphore(self.plan.concurrency), asyncio.Semaphore(self.plan.concurrency)
        tasks = {asyncio.create_task(self._one(r, calls, judging)): r for r in self.results}
        if not tasks:
            return self.results
        everything = asyncio.ensure_future(asyncio.wait(tasks))
        stopped = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({everything, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not everything.done():
            self.partial = True
            for task, result in tasks.items():
                if result.phase in ("queued", "judge_queued"):
                    task.cancel()
            hurried = asyncio.ensure_future(self._hurry.wait())
            await asyncio.wait({everything, hurried}, timeout=GRACE, return_when=asyncio.FIRST_COMPLETED)
            hurried.cancel()
            for task in tasks:
                task.cancel()
            await everything
        stopped.cancel()
        return self.results

    async def _one(self, r: Result, calls: asyncio.Semaphore, judging: asyncio.Semaphore) -> None:
        try:
            async with calls:
                if self._stop.is_set():
                    return
                r.phase = "candidate"
                await self._candidate(r)
            if r.status == "answered" and self.plan.judge is not None:
                r.phase = "judge_queued"
                async with judging:
                    if self._stop.is_set():
                        return
                    r.phase = "judge"
                    await self._judge(r)
        except asyncio.CancelledError:
            if r.phase == "candidate":
                r.status, r.error = "not_run", "interrupted (Ctrl-C)"
            elif r.phase == "judge":
                r.judge_error = "interrupted (Ctrl-C)"
        except Exception as exc:  # noqa: BLE001 - one input's failure (e.g. the database) is not the run's
            if r.phase == "candidate":
                r.status, r.error = "error", f"{type(exc).__name__}: {exc}"[:500]
            else:
                r.judge_error = f"{type(exc).__name__}: {exc}"[:500]
        finally:
            r.phase = "done"
            self.on_change()

    async def _candidate(self, r: Result) -> None:
        plan, inp = self.plan, r.input
        try:
            messages = plan.candidate.messages(inp.text, inp.turns, user=inp.user, channel=inp.channel,
                                               date=inp.date, thread=inp.thread)
        except PromptError as exc:  # the candidate's template fails on this input
            r.status, r.error = "error", str(exc)
            return
        call = await self._call(Trigger.REPLAY, plan.candidate, plan.model, messages, inp.text, inp.call_id)
        r.call_id, r.answer = call.id, call.answer or ""
        r.cost_usd, r.latency_ms = call.cost_usd, call.latency_ms
        if call.status not in ANSWERED:
            r.status, r.error = "error", call.error_message or call.error_type or call.status
            return
        r.status = "answered"
        r.checks = [check(r.answer) for check in plan.checks]
        r.reference_checks = [check(inp.reference) for check in plan.checks]

    async def _judge(self, r: Result) -> None:
        plan, inp = self.plan, r.input
        assert plan.judge is not None and plan.judge_model is not None
        a, b = (r.answer, inp.reference) if r.position == "A" else (inp.reference, r.answer)
        try:
            messages = judge_messages(plan.judge, text=inp.text, thread=inp.thread, answer_a=a, answer_b=b,
                                      date=inp.date)
        except PromptError as exc:
            r.judge_error = str(exc)
            return
        call = await self._call(Trigger.JUDGE, plan.judge, plan.judge_model, messages, inp.text, r.call_id)
        r.judge_call_id, r.judge_cost_usd = call.id, call.cost_usd
        if call.status not in ANSWERED:
            r.judge_error = call.error_message or call.error_type or call.status
            return
        said = verdict(call.answer or "")
        if said is None:
            tail = (call.answer or "").strip()[-80:]
            r.judge_error = f"no verdict in the judge's answer (…{tail!r})"
            return
        r.verdict, r.outcome = said, outcome(r.position, said)

    async def _call(self, trigger: Trigger, prompt: Prompt, model: str, messages: list[dict[str, Any]], text: str,
                    parent: int | None) -> Any:
        """One logged model call (source replay), posted nowhere; its row."""
        from bot.conversation import Ask, Replay

        replay = Replay(parent, messages, model, dict(prompt.options), self.plan.prompt if trigger == Trigger.REPLAY
                        else prompt.name, prompt.version)
        call_id = await self.conversation.answer(Ask(trigger=trigger, prompt=prompt, text=text, replay=replay),
                                                 _Unposted())
        call = await self.store.get_call(call_id) if call_id is not None else None
        if call is None:
            raise RuntimeError("the call's row was not written")
        return call


# -- figures --------------------------------------------------------------------------------


def figures(plan: Plan, results: list[Result], *, partial: bool, report: Path | None = None) -> dict[str, Any]:
    """The run's summary: what `--json` prints and the report shows (same numbers, same code)."""
    answered = [r for r in results if r.status == "answered"]
    judged = [r for r in answered if r.outcome]
    wins, ties, losses = (sum(r.outcome == o for r in judged) for o in ("win", "tie", "loss"))
    score = wins + ties / 2
    interval = wilson_interval(score, len(judged)) if plan.judge else None  # type: ignore[arg-type]
    has_checks = bool(plan.checks)
    per_check = [{"check": c.name, "passed": sum(r.checks[i] for r in answered), "total": len(answered),
                  "reference_passed": sum(r.reference_checks[i] for r in answered)}
                 for i, c in enumerate(plan.checks)]
    judge = plan.judge
    return {
        "prompt": plan.prompt,
        "candidate_version": plan.candidate.version,
        "candidate": str(plan.candidate.path),
        "model": plan.model,
        "inputs_from": plan.inputs_from,
        "inputs": len(results),
        "answered": len(answered),
        "errors": sum(r.status == "error" for r in results),
        "not_run": sum(r.status == "not_run" for r in results),
        "partial": partial,
        "inexact_inputs": sum(not r.input.exact for r in results),
        "judge": f"{judge.name}@{judge.short_version}" if judge else None,
        "judge_model": plan.judge_model if judge else None,
        "seed": plan.seed,
        "judged": len(judged) if judge else None,
        "judge_errors": sum(r.judge_error is not None for r in answered) if judge else None,
        "wins": wins if judge else None,
        "ties": ties if judge else None,
        "losses": losses if judge else None,
        "win_rate": round(score / len(judged), 6) if judge and judged else None,
        "win_rate_low": round(interval[0], 6) if interval else None,
        "win_rate_high": round(interval[1], 6) if interval else None,
        "judge_said_a": sum(r.verdict == "A" for r in judged) if judge else None,
        "checks_passed": sum(c["passed"] for c in per_check) if has_checks else None,
        "checks_total": len(plan.checks) * len(answered) if has_checks else None,
        "reference_checks_passed": sum(c["reference_passed"] for c in per_check) if has_checks else None,
        "checks": per_check,
        "cost_usd": _usd([r.cost_usd for r in answered]),
        "reference_cost_usd": _usd([r.input.reference_cost_usd for r in answered]),
        "judge_cost_usd": _usd([r.judge_cost_usd for r in answered]) if judge else None,
        "latency_p50_ms": percentile([r.latency_ms for r in answered], 50),
        "latency_p95_ms": percentile([r.latency_ms for r in answered], 95),
        "reference_latency_p50_ms": percentile([r.input.reference_latency_ms for r in answered], 50),
        "reference_latency_p95_ms": percentile([r.input.reference_latency_ms for r in answered], 95),
        "report": str(report) if report else None,
        "items": [_item(r) for r in results],
    }


def _item(r: Result) -> dict[str, Any]:
    return {"input": r.input.key, "call_id": r.input.call_id, "reference": r.input.reference_kind,
            "status": r.status, "replay_call_id": r.call_id, "error": r.error, "position": r.position,
            "verdict": r.verdict, "outcome": r.outcome, "judge_call_id": r.judge_call_id,
            "judge_error": r.judge_error, "checks_passed": sum(r.checks) if r.status == "answered" else None,
            "exact": r.input.exact}


def percentile(values: list[int | None], p: int) -> int | None:
    """Nearest rank, as `flywheel stats`: the ceil(p/100 * n)-th smallest known value."""
    known = sorted(v for v in values if v is not None)
    return known[max(math.ceil(p / 100 * len(known)), 1) - 1] if known else None


def _usd(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known), 10) if known else None


# -- the terminal -----------------------------------------------------------------------------


class Progress:
    """A progress bar on stderr as inputs finish, when it is a terminal (piped: nothing)."""

    def __init__(self, stream: IO[str], runner_results: Callable[[], list[Result]], total: int, label: str):
        self.results = runner_results
        self.bar = ProgressBar("replaying", total, stream=stream)  # the summary names prompt and version
        self._counted = 0.0

    def update(self, force: bool = False) -> None:
        # Counting goes over every input: not at each change of each one.
        if not self.bar.on or (not force and time.monotonic() - self._counted < PROGRESS_INTERVAL):
            return
        self._counted = time.monotonic()
        done = [r for r in self.results() if r.phase == "done"]
        judged = [r for r in done if r.outcome]
        note = (f"{sum(r.status == 'error' for r in done)} error(s)"
                + (f" · judged {len(judged)}: {sum(r.outcome == 'win' for r in judged)} W "
                   f"{sum(r.outcome == 'tie' for r in judged)} T {sum(r.outcome == 'loss' for r in judged)} L"
                   if judged else ""))
        self.bar.update(len(done), note)

    def close(self) -> None:
        self.update(force=True)  # the last state is drawn, then erased for the summary
        self.bar.close()


def summary_text(f: dict[str, Any]) -> str:
    """The figures for people."""
    lines = [f"{f['prompt']}: candidate {short_version(f['candidate_version'])} ({f['candidate']}, {f['model']}) on "
             f"{f['inputs']} input(s) from {f['inputs_from']}" + (" — PARTIAL (interrupted)" if f["partial"] else "")]
    lines.append(f"answered {f['answered']}, errors {f['errors']}" + (f", not run {f['not_run']}" if f["not_run"]
                                                                       else ""))
    if f["judge"]:
        rate = ("no verdicts" if f["win_rate"] is None else
                f"win rate {f['win_rate']:.0%} (95% CI {f['win_rate_low']:.0%}–{f['win_rate_high']:.0%})")
        lines.append(f"judge {f['judge']}: {f['wins']} wins, {f['ties']} ties, {f['losses']} losses → {rate}"
                     + (f"; {f['judge_errors']} without a verdict" if f["judge_errors"] else ""))
    if f["checks_total"] is not None:
        lines.append(f"checks: {f['checks_passed']}/{f['checks_total']} passed (the references: "
                     f"{f['reference_checks_passed']}/{f['checks_total']})")
    lines.append(f"cost: {_money(f['cost_usd'])} vs reference {_money(f['reference_cost_usd'])}; latency p50 "
                 f"{_ms(f['latency_p50_ms'])} vs {_ms(f['reference_latency_p50_ms'])}")
    if f["report"]:
        lines.append(f"report: {f['report']}")
    return "\n".join(lines)


def _money(v: float | None) -> str:
    return "unknown" if v is None else f"${v:.4f}"


def _ms(v: int | None) -> str:
    return "–" if v is None else f"{v} ms"


# -- command line -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Run a candidate prompt on real logged inputs (or an eval file) and compare its answers "
                          "with the corrected or approved ones: checks, a pairwise judge, cost and latency.")
    parser.add_argument("prompt", metavar="PROMPT", help="the prompt whose inputs are replayed, e.g. ask")
    parser.add_argument("--candidate", metavar="FILE", help="the prompt file to try (default: PROMPT's current "
                        "file); its name: must be PROMPT, whatever the file is called")
    parser.add_argument("--on", metavar="EVAL.jsonl", help="inputs from an eval file (flywheel export --format "
                        "eval) instead of the log; each item's ideal answer is the reference")
    parser.add_argument("--version", metavar="HASH", help="only inputs first answered by this prompt version "
                        "(a prefix is enough)")
    parser.add_argument("--since", metavar="WHEN", help="logged calls at or after this UTC date or datetime")
    parser.add_argument("--until", metavar="WHEN", help="logged calls before this UTC datetime (a date includes "
                        "that whole day)")
    parser.add_argument("--channel", metavar="ID", help="only logged calls in this Slack channel id")
    add_traffic_arguments(parser)
    parser.add_argument("--include-dms", action="store_true", help="also calls in direct messages and group DMs "
                        "(left out by default, as in exports)")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N inputs (from the log: the newest; from "
                        "a file: the first)")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, metavar="N",
                        help=f"candidate calls in flight at once, and as many judge calls (default "
                             f"{DEFAULT_CONCURRENCY})")
    parser.add_argument("--judge", metavar="PROMPT", help="a judge prompt: a name in PROMPTS_DIR (shipped: judge) "
                        "or a .prompty file")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="seed of the order the judge sees the two answers in (default 0)")
    parser.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the figures")

    def error(message: str) -> NoReturn:  # one line, no usage block; bad arguments exit 1 (SPEC)
        print(f"flywheel: {message}", file=sys.stderr)
        raise SystemExit(1)

    parser.error = error  # type: ignore[method-assign]


def _plan(args: argparse.Namespace, settings: Settings) -> Plan:
    """The candidate, checks and judge, checked; BadArguments says what is wrong."""
    if args.concurrency < 1:
        raise BadArguments("--concurrency must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise BadArguments("--limit must be at least 1")
    if args.report:
        report = Path(args.report)
        if report.is_dir() or not report.parent.is_dir():
            where = "is a folder" if report.is_dir() else f"folder {report.parent} does not exist"
            raise BadArguments(f"cannot write --report {report}: {where}")
    if args.on and not Path(args.on).is_file():
        raise BadArguments(f"--on {args.on}: no such file")
    if args.on and (args.since or args.until or args.channel or args.sources or args.models or args.include_dms):
        raise BadArguments("--since, --until, --channel, --source, --model and --include-dms select logged calls; "
                           "with --on the file's items are the inputs (--version and --limit still apply)")
    prompts = PromptSet.load(settings.prompts_dir)
    if args.candidate:
        candidate, problems = load_file(args.candidate, name=args.prompt)
    else:
        candidate = prompts.get(args.prompt) or prompts.helpers.get(args.prompt)
        problems = [p for p in prompts.problems if p.path.stem == args.prompt]
        if candidate is None and not problems:
            names = ", ".join(p.name for p in prompts) or "none"
            raise BadArguments(f"no prompt named {args.prompt!r} in {settings.prompts_dir}/ (found: {names}); "
                               "give the file to try with --candidate FILE")
    if candidate is None:
        raise BadArguments.at(problems)
    try:
        checks = checks_of(candidate)
    except PromptError as exc:
        raise BadArguments.at([exc]) from None
    judge = None
    if args.judge:
        if args.judge.endswith(".prompty") or "/" in args.judge:
            judge, problems = load_file(args.judge)
        else:
            judge = prompts.helpers.get(args.judge) or prompts.get(args.judge)
            problems = [p for p in prompts.problems if p.path.stem == args.judge]
            if judge is None and not problems:
                raise BadArguments(f"--judge: no prompt named {args.judge!r} in {settings.prompts_dir}/ (the "
                                   "shipped one is judge)")
        if judge is None:
            raise BadArguments.at(problems)
        try:
            check_judge(judge)
        except PromptError as exc:
            raise BadArguments.at([exc]) from None
    return Plan(prompt=args.prompt, candidate=candidate, model=candidate.model or settings.model, checks=checks,
                judge=judge, judge_model=(judge.model or settings.model) if judge else None,
                concurrency=args.concurrency, seed=args.seed, inputs_from=args.on or "log")


def _filters(args: argparse.Namespace) -> Filters:
    try:
        since = when_option(args.since, "--since", end=False) if args.since else None
        until = when_option(args.until, "--until", end=True) if args.until else None
    except ConfigError as exc:
        raise BadArguments(*exc.problems) from None
    if since and until and since >= until:
        raise BadArguments("--since must be before --until")
    return Filters(version=(args.version or "").strip() or None, since=since, until=until,
                   channel=args.channel or None, include_dms=args.include_dms,
                   sources=tuple(dict.fromkeys(args.sources or ["slack"])), models=tuple(args.models or ()))


def run(args: argparse.Namespace, settings: Settings) -> int:
    from bot import logs

    settings.require(model=True)
    logs.configure("WARNING" if settings.log_level == "INFO" else settings.log_level, settings.secrets,
                   settings.log_format)
    try:
        plan, filters = _plan(args, settings), _filters(args)
    except BadArguments as exc:
        print("\n".join(exc.lines), file=sys.stderr)
        return 1
    try:
        figures_, interrupted = asyncio.run(_go(args, settings, plan, filters))
    except InputError as exc:  # path:line: reason
        print(exc, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(figures_, ensure_ascii=False))
    else:
        print(summary_text(figures_))
    return 130 if interrupted else 0


async def _go(args: argparse.Namespace, settings: Settings, plan: Plan, filters: Filters
              ) -> tuple[dict[str, Any], bool]:
    from bot.conversation import Conversation
    from bot.llm import LLM
    from bot.pricing import PriceTable
    from bot.replay_report import write_report

    store = Store(settings.database_url)
    llm = LLM(api_key=settings.openai_api_key, base_url=settings.openai_base_url,
              idle_timeout=settings.model_timeout)
    try:
        if args.on:
            await _ready(store)
            inputs, skipped = await from_eval(store, Path(args.on), plan.prompt, version=filters.version,
                                              limit=args.limit)
            if skipped:
                print(f"flywheel: skipped {skipped} item(s) of other prompts or versions in {args.on}",
                      file=sys.stderr)
        else:
            await check_schema(store)
            await store.upgrade()
            inputs = await from_log(store, plan.prompt, filters, limit=args.limit)
            if not inputs:
                print(f"flywheel: no logged {'/'.join(filters.sources)} calls of {plan.prompt} with a reference (a "
                      "correction, or more 👍 than 👎) match; nothing to replay", file=sys.stderr)
        for prompt in [plan.candidate, *([plan.judge] if plan.judge else [])]:  # the hash leads back to the text
            await store.save_prompt_version(name=prompt.name, version=prompt.version, path=str(prompt.path),
                                            source=prompt.source, model=prompt.model)
        conversation = Conversation(settings=settings, prompts=lambda: PromptSet({}, [], settings.prompts_dir),
                                    llm=llm, store=store, prices=PriceTable.load(settings.prices_file),
                                    source="replay")
        runner = Runner(conversation, plan)
        progress = Progress(sys.stderr, lambda: runner.results, len(inputs),
                            f"{plan.prompt}@{plan.candidate.short_version}")
        runner.on_change = progress.update
        loop = asyncio.get_running_loop()
        with _on_sigint(loop, runner.interrupt):
            results = await runner.run(inputs)
        progress.close()
        if runner.partial:
            print(f"flywheel: interrupted: {sum(r.status == 'not_run' for r in results)} of {len(results)} "
                  "input(s) not run; the figures and the report cover the rest (partial)", file=sys.stderr)
        report = Path(args.report) if args.report else None
        found = figures(plan, results, partial=runner.partial, report=report)
        if report is not None:
            write_report(report, found, results, plan, created=datetime.now(UTC))
        return found, runner.partial
    finally:
        await llm.close()
        await store.close()


async def _ready(store: Store) -> None:
    """A database to log into: migrated (created if need be), as `flywheel try` does."""
    from bot.cli import upgrade_schema

    await upgrade_schema(store)


@contextlib.contextmanager
def _on_sigint(loop: asyncio.AbstractEventLoop, handler: Callable[[], None]):
    try:
        loop.add_signal_handler(signal.SIGINT, handler)
    except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C interrupts as usual
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
