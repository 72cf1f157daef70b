"""`flywheel …`: run the bot, migrate, list prompts, try a prompt, print the Slack manifest.

Library errors are translated here: a bad setting prints one line per problem
and exits 2; nothing prints a traceback at a user.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import logging
import sys
from collections.abc import Awaitable, Container, Sequence
from pathlib import Path
from typing import Any, TypeVar

from bot import logs
from bot.errors import ConfigError, FlywheelError, database_error
from bot.settings import Settings

log = logging.getLogger("flywheel")
T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = parser(commands={command} if command else set()).parse_args(argv)
    try:
        settings = Settings.from_env()
        return args.func(args, settings) or 0
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"flywheel: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def parser(commands: Container[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line. The options of export, stats, replay, experiment and prune live in
    their modules, which import what their work needs (SQL, statistics): only those of
    ``commands`` (every one when None) are imported, so `flywheel run` starts without them."""
    p = argparse.ArgumentParser(prog="flywheel", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="serve the bot (Socket Mode if SLACK_APP_TOKEN is set, else HTTP)")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--http", dest="socket", action="store_false", default=None, help="force HTTP mode")
    mode.add_argument("--socket", dest="socket", action="store_true", help="force Socket Mode")
    run.add_argument("--port", type=int, help="HTTP port (default: PORT, else 3000)")
    run.set_defaults(func=cmd_run)

    dev = sub.add_parser("dev", help="the playground: the bot on a local Slack stand-in, in your browser")
    dev.add_argument("--port", type=int, default=3000, help="port of the page (default 3000)")
    dev.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1: this machine only; with any other, "
                     "the page needs the token in the URL printed at start)")
    dev.add_argument("--state", type=Path, default=None,
                     help="file keeping the playground's channels and messages (default .flywheel-playground.json)")
    dev.set_defaults(func=cmd_dev)

    db = sub.add_parser("db", help="database commands")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    db_sub.add_parser("upgrade", help="create or migrate the schema").set_defaults(func=cmd_db_upgrade)

    sub.add_parser("prompts", help="list prompts, their commands and versions; report invalid files"
                   ).set_defaults(func=cmd_prompts)

    try_ = sub.add_parser("try", help="run one prompt from the terminal and log it")
    try_.add_argument("prompt", help="prompt name, e.g. ask")
    try_.add_argument("text", help="what you would write in Slack")
    try_.set_defaults(func=cmd_try)

    # Commands whose module owns its options (add_arguments) and its work (run).
    for name, module, about in (
        ("export", "export_cli", "write a dataset (JSONL or CSV) from the logged calls and votes"),
        ("stats", "stats_cli", "calls, votes, approval, cost and latency per prompt version"),
        ("replay", "replay", "run a candidate prompt on logged inputs and compare it with the corrected or "
                             "approved answers"),
        ("experiment", "experiment_cli", "live A/B experiments: how each arm is doing, and a verdict"),
        ("prune", "prune", "remove the text of old calls (questions, answers, corrections); keep tokens, cost "
                           "and votes"),
    ):
        command = sub.add_parser(name, help=about)
        if commands is None or name in commands:
            _module(module).add_arguments(command)
        command.set_defaults(func=functools.partial(_run_module, module))

    man = sub.add_parser("manifest", help="print a Slack app manifest (YAML) for these prompts")
    man_mode = man.add_mutually_exclusive_group()
    man_mode.add_argument("--http", dest="socket", action="store_false", default=None)
    man_mode.add_argument("--socket", dest="socket", action="store_true")
    man.add_argument("--url", help="public base URL of the bot in HTTP mode, e.g. https://my-bot.herokuapp.com")
    man.add_argument("--name", default="Flywheel", help="app and bot name shown in Slack")
    man.add_argument("--assistant", action="store_true",
                     help="add Slack's assistant pane (AI app split view): its view, events and scopes")
    man.set_defaults(func=cmd_manifest)
    return p


# -- commands -------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    socket = settings.socket_mode if args.socket is None else args.socket
    settings.require(slack=True, socket=socket, model=True, prompts=True)
    logs.configure(settings.log_level, settings.secrets, settings.log_format)
    log.info("prompts from %s", settings.prompts_from)

    async def go() -> None:
        from bot.migrate import begin_upgrade

        migration = await schema_step(begin_upgrade(settings.database_url))  # a child, alongside the imports
        from bot.app import create_app
        from bot.server import check_tokens, serve

        fw = create_app(settings)
        prompts = fw.conversation.prompts
        if prompts.get("ask") is None:
            log.warning("no valid prompts/ask.prompty: mentions that name no prompt get no answer")
        try:  # Slack's answer and the migration's at once
            await gather_all(check_tokens(fw, socket=socket), schema_step(migration.finished(fw.store)))
        except ConfigError:
            await fw.close()
            raise
        await fw.start()
        await serve(fw, socket=socket, port=args.port or settings.port)

    asyncio.run(go())
    return 0


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from bot.playground.run import DEFAULT_STATE, playground

    settings.require(prompts=True)
    logs.configure("WARNING" if settings.log_level == "INFO" else settings.log_level, settings.secrets,
                   settings.log_format)
    asyncio.run(playground(settings, host=args.host, port=args.port, state=args.state or DEFAULT_STATE))
    return 0


def cmd_db_upgrade(_: argparse.Namespace, settings: Settings) -> int:
    from bot.store import Store

    settings.require()
    logs.configure(settings.log_level, settings.secrets, settings.log_format)

    async def go() -> str:
        store = Store(settings.database_url)
        try:
            return await upgrade_schema(store)
        finally:
            await store.close()

    print(f"database is at revision {asyncio.run(go())}")
    return 0


def cmd_prompts(_: argparse.Namespace, settings: Settings) -> int:
    from bot.prompts import PromptSet

    settings.require(prompts=True)
    prompts = PromptSet.load(settings.prompts_dir)
    rows = [(p.name, (p.command or "-") if p.slack else "(not in Slack)", p.short_version,
             p.model or f"{settings.model} (default)", p.description) for p in [*prompts, *prompts.helpers.values()]]
    if rows:
        header = ("PROMPT", "COMMAND", "VERSION", "MODEL", "DESCRIPTION")
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
        for row in [header, *rows]:
            print("  ".join(str(c).ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    else:
        print(f"no prompts in {settings.prompts_dir}/")
    for e in prompts.experiments.values():
        arms = " · ".join(f"{arm} {weight:g} % ({(e.control if arm == 'a' else next(v.prompt for v in e.variants if v.arm == arm)).path.name})"
                          for arm, weight in e.weights.items())
        when = "" if e.started() else f", starts {e.start:%Y-%m-%d %H:%M} UTC" if e.start else ""
        print(f"experiment {e.name} on {e.prompt}{when}: {arms}")
    for problem in prompts.problems:
        print(f"invalid: {problem}", file=sys.stderr)
    for warning in prompts.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 1 if prompts.problems else 0


def cmd_try(args: argparse.Namespace, settings: Settings) -> int:
    from bot.app import Prompts
    from bot.conversation import Ask, Conversation
    from bot.llm import LLM
    from bot.models import ANSWERED, Trigger
    from bot.pricing import PriceTable
    from bot.store import Store

    settings.require(prompts=True)
    logs.configure("WARNING" if settings.log_level == "INFO" else settings.log_level, settings.secrets,
                   settings.log_format)
    echo = not settings.openai_api_key and not settings.openai_base_url  # as in the playground
    prompts = Prompts(settings.prompts_dir)
    prompt = prompts().get(args.prompt)
    if prompt is None:
        names = ", ".join(p.name for p in prompts()) or "none"
        print(f"flywheel: no valid prompt named {args.prompt!r} in {settings.prompts_dir}/ (found: {names})",
              file=sys.stderr)
        return 2

    async def go() -> str:
        store = Store(settings.database_url)
        if echo:
            from bot.playground.echo import EchoLLM

            print("flywheel: no OPENAI_API_KEY or OPENAI_BASE_URL: the offline echo model answers",
                  file=sys.stderr)
            llm: Any = EchoLLM()
        else:
            llm = LLM(api_key=settings.openai_api_key, base_url=settings.openai_base_url,
                      idle_timeout=settings.model_timeout)
        try:
            await upgrade_schema(store)
            conversation = Conversation(settings=settings, prompts=prompts, llm=llm, store=store, source="try",
                                        prices=PriceTable.load(settings.prices_file))
            call_id = await conversation.answer(Ask(trigger=Trigger.CLI, prompt=prompt, text=args.text), TerminalReply())
            assert call_id is not None  # try writes its row directly: a database error raised already
            call = await store.get_call(call_id)
            assert call is not None
            cost = f"${call.cost_usd:.6f}" if call.cost_usd is not None else "cost unknown"
            tokens = f"{call.prompt_tokens or 0}+{call.completion_tokens or 0} tokens"
            print(f"[call {call_id} · {prompt.name}@{prompt.short_version} · {call.model} · {tokens} · {cost} · "
                  f"{call.latency_ms} ms]", file=sys.stderr)
            return call.status
        finally:
            await llm.close()
            await store.close()

    return 0 if asyncio.run(go()) in ANSWERED else 1


def cmd_manifest(args: argparse.Namespace, settings: Settings) -> int:
    from bot.manifest import PLACEHOLDER_URL, manifest, to_yaml
    from bot.prompts import PromptSet

    settings.require(prompts=True)
    socket = settings.socket_mode if args.socket is None else args.socket
    if args.url and socket:
        raise ConfigError(["--url is for HTTP mode: in Socket Mode Slack sends nothing to a URL "
                           "(drop --url, or use --http)"])
    if args.url and not args.url.startswith("https://"):
        raise ConfigError([f"--url must be an https:// URL (Slack sends events only over HTTPS), got {args.url!r}"])
    prompts = PromptSet.load(settings.prompts_dir)
    for problem in prompts.problems:
        print(f"flywheel: skipped invalid prompt: {problem}", file=sys.stderr)
    print(to_yaml(manifest(prompts, socket=socket, url=args.url, name=args.name, assistant=args.assistant)), end="")
    if not socket and not args.url:
        print(f"flywheel: replace {PLACEHOLDER_URL} with your bot's public URL (or pass --url)",
              file=sys.stderr)
    return 0


# -- helpers --------------------------------------------------------------------------


def _run_module(module: str, args: argparse.Namespace, settings: Settings) -> int:
    return _module(module).run(args, settings)


def _module(name: str):
    """bot.export_cli / stats_cli / replay / experiment_cli / prune: each module owns its options."""
    return importlib.import_module(f"bot.{name}")



class TerminalReply:
    """Prints the answer as it streams (model text as is: no Slack escaping)."""

    def __init__(self) -> None:
        self.message_ts: list[str] = []

    async def write(self, delta: str) -> None:
        sys.stdout.write(delta)
        sys.stdout.flush()

    async def finish(self, note: str | None = None, blocks: list[dict] | None = None,
                     metadata: dict | None = None) -> None:
        sys.stdout.write("\n")
        if note:
            print(note.strip("_"), file=sys.stderr)


async def gather_all(*checks: Awaitable[object]) -> None:
    """Run start-up checks at once and let each finish; raise every problem they found as one
    ConfigError (a refused token and an unreachable database are both worth knowing)."""
    results = await asyncio.gather(*checks, return_exceptions=True)
    problems = [line for r in results if isinstance(r, ConfigError) for line in r.problems]
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, ConfigError):
            raise result
    if problems:
        raise ConfigError(problems)


async def upgrade_schema(store) -> str:
    return await schema_step(store.upgrade())


async def schema_step(step: Awaitable[T]) -> T:
    """Await a step of opening or migrating the database; a failure is one line for the user."""
    try:
        return await step
    except FlywheelError:
        raise
    except Exception as exc:  # noqa: BLE001 - any driver error: say what and where, no traceback
        raise database_error("open or migrate", exc) from exc
