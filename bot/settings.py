"""Settings: the only module that reads the environment or `.env`.

`Settings.from_env()` parses every setting once. A malformed value is a
problem straight away; a *missing* value is only a problem for the command
that needs it (`flywheel manifest` needs no tokens), so each command asks
`settings.problems_for(...)` and stops with one line per problem.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from bot.errors import ConfigError

DEFAULT_MODEL = "gpt-5.4-mini"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_DATABASE_URL = "sqlite:///flywheel.db"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# name -> (meaning shown in errors, default). Order is the order of .env.example.
SETTINGS: dict[str, tuple[str, str | None]] = {
    "SLACK_BOT_TOKEN": ("the bot token (xoxb-…) from your Slack app's OAuth & Permissions page", None),
    "SLACK_SIGNING_SECRET": ("the signing secret from your Slack app's Basic Information page", None),
    "SLACK_APP_TOKEN": ("an app-level token (xapp-…) with connections:write; selects Socket Mode", None),
    "SLACK_API_URL": ("the Slack Web API base URL", DEFAULT_SLACK_API_URL),
    "OPENAI_API_KEY": ("the model provider's API key", None),
    "OPENAI_BASE_URL": ("an OpenAI-compatible server's base URL", None),
    "FLYWHEEL_MODEL": ("the model used when a prompt names none", DEFAULT_MODEL),
    "FLYWHEEL_MODEL_TIMEOUT": ("seconds without a token from the model before giving up", "30"),
    "FLYWHEEL_PRICES": ("a JSON file of model prices that overrides or extends the built-in table", None),
    "FLYWHEEL_UP_REACTIONS": ("comma-separated reactions that count as 👍", "+1,thumbsup"),
    "FLYWHEEL_DOWN_REACTIONS": ("comma-separated reactions that count as 👎", "-1,thumbsdown"),
    "FLYWHEEL_EXCLUDE_REACTION": ("the reaction that keeps an answer out of training exports",
                                  "no_entry_sign"),
    "DATABASE_URL": ("a SQLAlchemy database URL", DEFAULT_DATABASE_URL),
    "FLYWHEEL_JOURNAL_DIR": ("the folder where votes, corrections and call rows wait while the database is away",
                             "flywheel-journal"),
    "PROMPTS_DIR": ("the folder of prompt files", "prompts"),
    "PORT": ("the HTTP port", "3000"),
    "FLYWHEEL_SHUTDOWN_GRACE": ("seconds answers in flight may take to finish after SIGTERM", "25"),
    "LOG_LEVEL": ("the log level", "INFO"),
    "LOG_FORMAT": ("text, or json for one JSON object per line", "text"),
}


@dataclass(frozen=True)
class Settings:
    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str = DEFAULT_SLACK_API_URL
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    model: str = DEFAULT_MODEL
    model_timeout: float = 30.0
    prices_file: Path | None = None
    up_reactions: frozenset[str] = frozenset({"+1", "thumbsup"})
    down_reactions: frozenset[str] = frozenset({"-1", "thumbsdown"})
    exclude_reaction: str = "no_entry_sign"
    database_url: str = DEFAULT_DATABASE_URL
    journal_dir: Path = Path("flywheel-journal")
    prompts_dir: Path = Path("prompts")
    # Where prompts_dir came from: "PROMPTS_DIR", "working directory" (./prompts) or "shipped".
    prompts_origin: str = "working directory"
    port: int = 3000
    shutdown_grace: float = 25.0
    log_level: str = "INFO"
    log_format: str = "text"
    # Malformed values found while parsing; reported by problems_for().
    malformed: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, dotenv: Path | str | None = ".env"
    ) -> Settings:
        """Read settings from `.env` (if present) overlaid by the process environment."""
        values: dict[str, str] = {}
        if dotenv is not None and Path(dotenv).is_file():
            from dotenv import dotenv_values  # only when there is a .env to read

            values.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
        values.update(os.environ if environ is None else environ)
        return cls.parse(values)

    @classmethod
    def parse(cls, values: Mapping[str, str]) -> Settings:
        problems: list[str] = []

        def get(name: str) -> str | None:
            raw = values.get(name)
            if raw is None or not raw.strip():
                return SETTINGS[name][1]
            return raw.strip()

        def bad(name: str, why: str) -> None:
            problems.append(f"{name} {why}")

        bot_token = get("SLACK_BOT_TOKEN")
        if bot_token and not bot_token.startswith("xoxb-"):
            bad("SLACK_BOT_TOKEN", "must be a bot token starting with xoxb- (OAuth & Permissions page)")
        app_token = get("SLACK_APP_TOKEN")
        if app_token and not app_token.startswith("xapp-"):
            bad("SLACK_APP_TOKEN", "must be an app-level token starting with xapp- (Basic Information page)")

        slack_api_url = get("SLACK_API_URL") or DEFAULT_SLACK_API_URL
        if not _is_http_url(slack_api_url):
            bad("SLACK_API_URL", f"must be an http(s) URL such as {DEFAULT_SLACK_API_URL}")
        elif not slack_api_url.endswith("/"):
            slack_api_url += "/"
        base_url = get("OPENAI_BASE_URL")
        if base_url and not _is_http_url(base_url):
            bad("OPENAI_BASE_URL", "must be an http(s) URL such as http://localhost:11434/v1")

        timeout = _number(get("FLYWHEEL_MODEL_TIMEOUT") or "30")
        if timeout is None or not 1 <= timeout <= 600:
            bad("FLYWHEEL_MODEL_TIMEOUT", "must be a number of seconds between 1 and 600")
            timeout = 30.0

        grace = _number(get("FLYWHEEL_SHUTDOWN_GRACE") or "25")
        if grace is None or not 0 <= grace <= 3600:
            bad("FLYWHEEL_SHUTDOWN_GRACE", "must be a number of seconds between 0 and 3600 (Heroku allows 30 in all)")
            grace = 25.0

        port_raw = get("PORT") or "3000"
        port = int(port_raw) if port_raw.isdigit() else -1
        if not 1 <= port <= 65535:
            bad("PORT", f"must be a port number between 1 and 65535, got {port_raw!r}")
            port = 3000

        level = (get("LOG_LEVEL") or "INFO").upper()
        if level not in LOG_LEVELS:
            bad("LOG_LEVEL", f"must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
            level = "INFO"

        log_format = (get("LOG_FORMAT") or "text").lower()
        if log_format not in ("text", "json"):
            bad("LOG_FORMAT", f"must be text or json, got {log_format!r}")
            log_format = "text"

        prices_file = Path(p) if (p := get("FLYWHEEL_PRICES")) else None
        if prices_file is not None:  # read now, so that it is reported with every other problem
            from bot.pricing import PriceTable

            try:
                PriceTable.load(prices_file)
            except ConfigError as exc:
                problems.extend(exc.problems)

        reactions = {}
        for name in ("FLYWHEEL_UP_REACTIONS", "FLYWHEEL_DOWN_REACTIONS"):
            reactions[name] = _reaction_set(get(name))
            if values.get(name) is not None and not _reaction_set(values[name]):
                # Set, but to nothing: no vote would ever count. Unset means the default.
                bad(name, f"names no reaction; list at least one (unset, it is {SETTINGS[name][1]})")

        database_url = normalize_database_url(get("DATABASE_URL") or DEFAULT_DATABASE_URL)
        if not database_url.startswith(("sqlite", "postgresql")):
            bad("DATABASE_URL", "must be a sqlite:/// or postgresql:// (or postgres://) URL")
        elif database_url.startswith("postgresql") and (why := _url_problem(database_url)) is not None:
            bad("DATABASE_URL", why)

        if (prompts_raw := (values.get("PROMPTS_DIR") or "").strip()):
            prompts_dir, prompts_origin = Path(prompts_raw), "PROMPTS_DIR"
        else:
            prompts_dir, prompts_origin = default_prompts_dir()

        return cls(
            slack_bot_token=bot_token,
            slack_signing_secret=get("SLACK_SIGNING_SECRET"),
            slack_app_token=app_token,
            slack_api_url=slack_api_url,
            openai_api_key=get("OPENAI_API_KEY"),
            openai_base_url=base_url,
            model=get("FLYWHEEL_MODEL") or DEFAULT_MODEL,
            model_timeout=timeout,
            prices_file=prices_file,
            up_reactions=reactions["FLYWHEEL_UP_REACTIONS"],
            down_reactions=reactions["FLYWHEEL_DOWN_REACTIONS"],
            exclude_reaction=(get("FLYWHEEL_EXCLUDE_REACTION") or "no_entry_sign").strip(":"),
            database_url=database_url,
            journal_dir=Path(get("FLYWHEEL_JOURNAL_DIR") or "flywheel-journal"),
            prompts_dir=prompts_dir,
            prompts_origin=prompts_origin,
            port=port,
            shutdown_grace=grace,
            log_level=level,
            log_format=log_format,
            malformed=tuple(problems),
        )

    # -- what each command needs -------------------------------------------------

    @property
    def socket_mode(self) -> bool:
        return bool(self.slack_app_token)

    def problems_for(self, *, slack: bool = False, socket: bool | None = None, model: bool = False,
                     prompts: bool = False) -> list[str]:
        """Lines naming each malformed setting, then each missing one this command needs."""
        problems = list(self.malformed)
        if prompts and self.prompts_origin == "PROMPTS_DIR" and not self.prompts_dir.is_dir():
            # Read when a command needs it: `flywheel export` has no use for prompts.
            problems.append(f"PROMPTS_DIR is {str(self.prompts_dir)!r}, which is not a folder: set it to the "
                            "folder that holds your .prompty files, or unset it to use ./prompts (or, where "
                            "there is none, the prompts shipped with Flywheel)")
        socket = self.socket_mode if socket is None else socket
        if slack:
            if not self.slack_bot_token:
                problems.append(_missing("SLACK_BOT_TOKEN"))
            if socket and not self.slack_app_token:
                problems.append(_missing("SLACK_APP_TOKEN", "needed for Socket Mode"))
            if not socket and not self.slack_signing_secret:
                problems.append(_missing("SLACK_SIGNING_SECRET", "needed in HTTP mode"))
        if model and not self.openai_api_key and not self.openai_base_url:
            problems.append(_missing("OPENAI_API_KEY", "or set OPENAI_BASE_URL to a server that needs no key"))
        return problems

    def require(self, **needs: bool | None) -> Settings:
        problems = self.problems_for(**needs)  # type: ignore[arg-type]
        if problems:
            raise ConfigError(problems)
        return self

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in logs, user-visible text or exports."""
        candidates = [self.slack_bot_token, self.slack_signing_secret, self.slack_app_token, self.openai_api_key]
        for url in (self.database_url, self.openai_base_url):  # a password, or a key in the query (Azure)
            try:
                parts = urlsplit(url or "")
                candidates += [parts.password, *(v for _, v in parse_qsl(parts.query))]
            except ValueError:
                continue
        return tuple(dict.fromkeys(s for s in candidates if s and len(s) >= 8))

    @property
    def prompts_from(self) -> str:
        """Where the prompts come from, for a person reading the log or the playground's banner."""
        return {"PROMPTS_DIR": f"{self.prompts_dir}/ (PROMPTS_DIR)",
                "shipped": f"the prompts shipped with Flywheel, {self.prompts_dir}/ (no ./prompts here; "
                           "copy them there to change them)",
                }.get(self.prompts_origin, f"{self.prompts_dir}/ (in the working directory)")


def shipped_prompts_dir() -> Path:
    """The prompts that come with Flywheel: package data in an installed wheel
    (``bot/shipped_prompts``, built from the checkout's ``prompts/``: one copy of each file),
    the checkout's ``prompts/`` in an editable install."""
    package = Path(__file__).resolve().parent
    installed = package / "shipped_prompts"
    return installed if installed.is_dir() else package.parent / "prompts"


def default_prompts_dir() -> tuple[Path, str]:
    """``prompts`` in the working directory; else the prompts shipped with Flywheel, so that
    the bot answers wherever it is started. Returns the folder and where it came from."""
    local, shipped = Path("prompts"), shipped_prompts_dir()
    if local.is_dir() or not shipped.is_dir():
        return local, "working directory"
    return shipped, "shipped"


def normalize_database_url(url: str) -> str:
    """Accept Heroku's ``postgres://`` form (SQLAlchemy only knows ``postgresql://``)."""
    if url.startswith("postgres://"):
        return "postgresql://" + url[len("postgres://") :]
    return url


def _missing(name: str, extra: str = "") -> str:
    meaning = SETTINGS[name][0]
    tail = f" ({extra})" if extra else ""
    return f"{name} is not set: {meaning}{tail}. Put it in .env or the environment."


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _url_problem(url: str) -> str | None:
    """Why SQLAlchemy could not read ``url`` (a port that is not a number, …), never quoting
    the URL itself (it may hold a password); None when it reads."""
    from sqlalchemy.engine import make_url  # only here: settings stay cheap to import

    try:
        make_url(url)
    except Exception as exc:  # noqa: BLE001 - ValueError, ArgumentError: any reason is the same problem
        reason = "its port is not a number" if "int()" in str(exc) else "it is not a URL SQLAlchemy can read"
        return f"cannot be read: {reason} (the form is postgresql://USER:PASSWORD@HOST:PORT/DATABASE)"
    return None


def _reaction_set(value: str | None) -> frozenset[str]:
    names = (r.strip().strip(":").strip() for r in (value or "").split(","))
    return frozenset(n for n in names if n)
