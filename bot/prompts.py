"""Prompt files: load, validate, render, version.

``prompts/NAME.prompty`` is a Prompty-compatible subset: YAML front matter between
``---`` lines (checked here, in each shape Prompty reads), then a body of role-marked,
sandboxed Jinja2 messages (read in ``bot/prompt_body.py``).

Loading never raises: every invalid file becomes a ``PromptError`` (path, line,
reason) in ``PromptSet.problems`` and the other files still load; a prompt that loads but
probably does not do what was meant (it never uses ``{{ text }}``) is in
``PromptSet.warnings``. A prompt's version is the sha256 of its file's bytes, so any edit
is a new version in the call log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from bot.errors import PromptError
from bot.experiments import CONTROL, Assignment, Declaration, Experiment, Variant, choose
from bot.prompt_body import KNOWN_VARIABLES, Block, compile_body, render, render_name
from bot.team import CHANNEL_RE, NO_TEAM, Team, check_prompts, load_team
from bot.team import FILE_NAME as TEAM_FILE

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
COMMAND_RE = re.compile(r"^/[a-z0-9][a-z0-9_-]{0,30}$")
MAX_COMMANDS = 50  # Slack's limit per app manifest

SHORT_VERSION = 12  # the characters of a version's sha256 a person reads; --json and datasets keep all 64


def short_version(version: str) -> str:
    """How every report, log line and page shows a prompt version."""
    return version[:SHORT_VERSION]


TOP_KEYS = ("name", "description", "version", "authors", "tags", "model", "inputs",
            "outputs", "sample", "template", "metadata")
MODEL_KEYS = ("id", "api", "apiType", "provider", "connection", "options")
SLACK_KEYS = ("command", "usage_hint", "channels")
# What a prompt shows under each answer (metadata.feedback), and the defaults.
FEEDBACK_DEFAULTS = {"buttons": True, "fix": True, "regenerate": True}
INPUT_KEYS = ("name", "type", "kind", "default", "description", "required", "sample", "example")
_HINTS = {"parameters": "options", "configuration": "connection"}  # Prompty 1 spellings

_Fail = Callable[[int | None, str], None]  # report a problem at a file line
_At = Callable[..., int]  # file line of a front-matter key path, e.g. at("model", "options")


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(lo: float, hi: float) -> tuple[Any, str]:
    return ((lambda v: (_whole(v) or isinstance(v, float)) and lo <= v <= hi),
            f"a number between {lo} and {hi}")


def _one_of(*choices: str) -> tuple[Any, str]:
    return (lambda v: isinstance(v, str) and v in choices), "one of " + ", ".join(choices)


_POSITIVE = (lambda v: _whole(v) and v > 0), "a positive whole number"
_OPTIONS: dict[str, tuple[Any, str]] = {  # name -> (check, what it must be)
    "temperature": _number(0, 2), "top_p": _number(0, 1),
    "max_tokens": _POSITIVE, "max_completion_tokens": _POSITIVE,
    "frequency_penalty": _number(-2, 2), "presence_penalty": _number(-2, 2),
    "stop": ((lambda v: isinstance(v, str) or (isinstance(v, list) and len(v) <= 4
                                               and all(isinstance(s, str) for s in v))),
             "a string or a list of at most 4 strings"),
    "seed": (_whole, "a whole number"),
    "reasoning_effort": _one_of("none", "minimal", "low", "medium", "high", "xhigh"),
    "verbosity": _one_of("low", "medium", "high"),
}
# Prompty 2's option names and the OpenAI parameter each maps to (its spec, "Options Mapping");
# `temperature` and `seed` are spelt alike, and `additionalProperties` are passed on as written.
_PROMPTY_OPTIONS = {"maxOutputTokens": "max_completion_tokens", "topP": "top_p", "frequencyPenalty":
                    "frequency_penalty", "presencePenalty": "presence_penalty", "stopSequences": "stop"}


@dataclass(frozen=True)
class Prompt:
    name: str
    description: str
    path: Path
    version: str
    source: str
    model: str | None
    options: dict[str, Any]
    command: str | None
    usage_hint: str
    feedback: dict[str, Any]
    inputs: dict[str, Any]
    uses_thread: bool = False  # the template reads {{ thread }}: history is then not inserted
    # things worth fixing that do not stop the prompt from working (path, line, reason)
    warnings: tuple[PromptError, ...] = field(default=(), compare=False)
    slack: bool = True  # a Slack skill; `metadata: {slack: false}` keeps it out (a judge for `flywheel replay`)
    experiment: Declaration | None = field(default=None, compare=False)  # metadata.experiment (a variant's)
    channels: frozenset[str] | None = None  # metadata.slack.channels: only there (None: everywhere)
    _blocks: tuple[Block, ...] = field(default=(), repr=False, compare=False)
    _command_line: int | None = field(default=None, repr=False, compare=False)

    @property
    def short_version(self) -> str:
        return short_version(self.version)

    def allowed_in(self, channel: str | None) -> bool:
        """Whether this prompt answers in ``channel`` (None: not in a channel, e.g. the terminal)."""
        return self.channels is None or channel is None or channel in self.channels

    def messages(self, text: str, history: Sequence[dict] = (), **variables: Any) -> list[dict]:
        """Render the chat messages for one call.

        Variables: declared input defaults, then the caller's ``variables`` (None means
        "not given"), then ``text``. ``history`` (earlier turns as role/content dicts)
        goes just before the last template message, unless the template reads
        ``{{ thread }}``, which already carries the thread as a transcript.
        Raises ``PromptError`` if a template fails at render time.
        """
        text = text or ""
        values: dict[str, Any] = {"user": "", "channel": "", "thread": "",
                                  "date": dt.date.today().isoformat()}
        values |= {n: s["default"] for n, s in self.inputs.items() if s.get("default") is not None}
        values |= {k: v for k, v in variables.items() if v is not None}
        values["text"] = text
        out: list[dict] = []
        last = len(self._blocks) - 1
        for i, block in enumerate(self._blocks):
            content = render(block, values, self.path)
            if i == last and not content:
                content = text
            if content or i == last:
                message = {"role": block.role, "content": content}
                name = render_name(block, values, self.path) if block.name else ""
                if name:
                    message["name"] = name
                out.append(message)
        if not self.uses_thread:
            out[-1:-1] = [dict(turn) for turn in history]
        return out


@dataclass
class PromptSet:
    prompts: dict[str, Prompt]
    problems: list[PromptError]  # files left out, and why
    directory: Path
    _snapshot: dict[str, tuple[int, int]] | None = field(default=None, repr=False)
    warnings: list[PromptError] = field(default_factory=list)  # loaded prompts that may not do what was meant
    helpers: dict[str, Prompt] = field(default_factory=dict)  # `slack: false`: for tools, never in Slack
    experiments: dict[str, Experiment] = field(default_factory=dict)  # by prompt name: its variant files
    team: Team = NO_TEAM  # team.yaml beside the prompts: channels, budgets, admins (bot.team)

    @classmethod
    def load(cls, directory: Path | str) -> PromptSet:
        directory = Path(directory)
        if not directory.is_dir():
            reason = "folder not found (set PROMPTS_DIR to the folder that holds your .prompty files)"
            return cls({}, [PromptError(directory, None, reason)], directory, None)
        snapshot = _snapshot(directory)  # before reading, so an edit during load shows as changed
        prompts: dict[str, Prompt] = {}
        problems: list[PromptError] = []
        commands: dict[str, Path] = {}
        helpers: dict[str, Prompt] = {}
        variants: list[tuple[str, Prompt]] = []
        for path in _prompt_files(directory):
            try:
                raw = path.read_bytes()
            except OSError as exc:
                problems.append(PromptError(path, None, f"cannot read the file: {exc.strerror or exc}"))
                continue
            stem, _, arm = path.stem.partition(".")
            if arm and not (NAME_RE.match(arm) and "." not in arm and NAME_RE.match(stem)):
                arm = ""  # not NAME.ARM.prompty: reported below as a bad name
            try:
                prompt, errors = _parse(path, raw, stem if arm else None)
            except Exception as exc:  # a bug here must not take the other prompts (or the bot) down
                prompt, errors = None, [PromptError(path, None, f"could not load: {exc!r}")]
            problems += errors
            if prompt is None:
                continue
            if arm:
                variants.append((arm, prompt))
                continue
            if not prompt.slack:
                helpers[prompt.name] = prompt
                continue
            if prompt.command and (prompt.command in commands or len(commands) >= MAX_COMMANDS):
                why = (f"{prompt.command} is already declared by {commands[prompt.command].name}"
                       if prompt.command in commands else f"Slack allows at most {MAX_COMMANDS} per app")
                problems.append(PromptError(path, prompt._command_line, (
                    f"metadata.slack.command: {why}; this prompt loads without a slash command")))
                prompt = replace(prompt, command=None)
            elif prompt.command:
                commands[prompt.command] = path
            prompts[prompt.name] = prompt
        experiments = _experiments(prompts, variants, problems)
        team, team_problems = load_team(directory)
        problems += team_problems
        team = check_prompts(team, prompts, problems)
        loaded = [*prompts.values(), *helpers.values(), *(v.prompt for e in experiments.values() for v in e.variants)]
        warnings = [w for p in loaded for w in p.warnings]
        return cls(dict(sorted(prompts.items())), problems, directory, snapshot, warnings,
                   dict(sorted(helpers.items())), experiments, team)

    def get(self, name: str) -> Prompt | None:
        return self.prompts.get(name.strip().lower())

    def by_command(self, command: str) -> Prompt | None:
        wanted = "/" + command.strip().lower().lstrip("/")
        return next((p for p in self.prompts.values() if p.command == wanted), None)

    def route(self, text: str, default: str = "ask", *, channel: str | None = None) -> tuple[Prompt | None, str]:
        """``"summarize: notes"`` -> (summarize, "notes"); otherwise (default prompt, text). In
        ``channel``, the default is the one team.yaml gives it, and a prompt kept to other
        channels (``metadata.slack.channels``) is not a name but part of the text."""
        parts = text.split(maxsplit=1)
        if parts:
            word = parts[0].rstrip(":,")
            prompt = self.get(word) if word else None
            if prompt is not None and prompt.allowed_in(channel):
                return prompt, parts[1].strip() if len(parts) > 1 else ""
        return self.get(self.team.channel(channel).prompt or default), text

    def choose(self, prompt: Prompt, user_id: str | None) -> Assignment:
        """The arm of ``prompt``'s running experiment that this person gets (see bot.experiments)."""
        return choose(self.experiments.get(prompt.name), prompt, user_id)

    def broken(self, word: str) -> list[PromptError]:
        """Why the prompt that ``word`` names (``summarize``, or a command ``/summarize``) is
        not answering: the problems of its file, with paths relative to the prompts folder
        (safe to show in Slack). Empty when no broken file would answer ``word``."""
        wanted = word.strip().lower().rstrip(":,")
        if not wanted or (self.by_command(wanted) if wanted.startswith("/") else self.get(wanted)):
            return []
        found = []
        for problem in self.problems:
            if problem.path.suffix != ".prompty" or problem.path.name in {p.path.name for p in self}:
                continue  # the folder itself, or a file that loads (e.g. without its command)
            names = {problem.path.stem.lower()}
            if wanted.startswith("/"):
                names = {"/" + n for n in names} | set(_declared_command(problem.path))
            if wanted in names:
                found.append(problem)
        shown = str(self.directory.resolve())
        return [PromptError(p.path.name, p.line, p.reason.replace(shown, ".").replace(str(self.directory), "."))
                for p in found]

    def broken_note(self, word: str) -> str | None:
        """What to tell the person who asked for ``word`` when its prompt file is broken."""
        problems = self.broken(word)
        if not problems:
            return None
        where = "\n".join(f"`{p}`" for p in problems[:5])
        more = f"\n…and {len(problems) - 5} more" if len(problems) > 5 else ""
        return (f"`{word.strip().rstrip(':,')}` is not answering: its prompt file is broken.\n{where}{more}\n"
                "Fix the file in the prompts folder (`flywheel prompts` checks it); the next message uses it.")

    def changed(self) -> bool:
        """Whether a .prompty file was added, removed or modified since ``load``."""
        return _snapshot(self.directory) != self._snapshot

    def __iter__(self) -> Iterator[Prompt]:
        return iter(self.prompts.values())

    def __len__(self) -> int:
        return len(self.prompts)


def load_file(path: Path | str, *, name: str | None = None, raw: bytes | None = None
              ) -> tuple[Prompt | None, list[PromptError]]:
    """One prompt file on its own, e.g. a candidate for `flywheel replay`. ``name``: the prompt
    it stands in for, whatever the file is called (``my-ask.prompty`` holding ``name: ask``);
    ``raw``: its bytes, when they come from elsewhere (a version's text kept in the log)."""
    path = Path(path)
    try:
        return _parse(path, path.read_bytes() if raw is None else raw, name)
    except OSError as exc:
        return None, [PromptError(path, None, f"cannot read the file: {exc.strerror or exc}")]
    except Exception as exc:  # as in PromptSet.load: a bug here is a problem with this file
        return None, [PromptError(path, None, f"could not load: {exc!r}")]


def _is_prompt_file(name: str) -> bool:
    return name.endswith(".prompty") and not name.startswith(".")


def _prompt_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.prompty") if _is_prompt_file(p.name) and p.is_file())


_COMMAND_LINE = re.compile(r"^\s*command:\s*['\"]?(/[A-Za-z0-9_-]+)", re.MULTILINE)


def _declared_command(path: Path) -> list[str]:
    """The slash command a file declares, read as plain text: its YAML may be what is broken."""
    try:
        return [c.lower() for c in _COMMAND_LINE.findall(path.read_text("utf-8", errors="replace"))]
    except OSError:
        return []


def _snapshot(directory: Path) -> dict[str, tuple[int, int]] | None:
    """Name -> (mtime, size) of the prompt files and team.yaml. Taken for every message, so one
    directory read and one stat per file (pathlib's glob and is_file would cost ten times more)."""
    try:
        with os.scandir(directory) as entries:
            return {e.name: (st.st_mtime_ns, st.st_size) for e in entries
                    if (e.name == TEAM_FILE or _is_prompt_file(e.name)) and e.is_file() for st in [e.stat()]}
    except OSError:  # no folder, or a file vanished mid-scan: "changed", and the reload sorts it out
        return None


# --- parsing and validation -------------------------------------------------------------------

def _line(root: yaml.Node | None, *path: str | int, offset: int = 2) -> int:
    """File line of a YAML key (front matter starts on file line 2: ``offset``); else its nearest parent's."""
    node, line = root, 1
    for key in path:
        if isinstance(node, yaml.MappingNode):
            found = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(key)]
            if not found:
                break
            knode, node = found[-1]
            line = knode.start_mark.line + offset
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + offset
        else:
            break
    return line


def _duplicate_keys(node: yaml.Node | None) -> Iterator[tuple[int, str]]:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                if k.value in seen:
                    yield k.start_mark.line + 2, f"duplicate key '{k.value}' (YAML keeps only the last one)"
                seen.add(k.value)
            yield from _duplicate_keys(v)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _duplicate_keys(item)


def _unknown(mapping: dict, allowed: tuple[str, ...], where: tuple, label: str, at: _At, fail: _Fail) -> None:
    for key in (k for k in mapping if k not in allowed):
        if not label and key == "tools":  # Prompty's, so not "unknown"
            fail(at(key), "tools: not supported (Flywheel prompts call no tools)")
        elif not label:
            fail(at(key), f"unknown key '{key}' (allowed: {', '.join(allowed)}; "
                          "Flywheel's own settings go under metadata)")
        else:
            hint = f"; did you mean '{_HINTS[key]}'?" if label == "model" and key in _HINTS else ""
            fail(at(*where, key), f"{label}.{key}: unknown key (allowed: {', '.join(allowed)}){hint}")


def _parse(path: Path, raw: bytes, stem: str | None = None) -> tuple[Prompt | None, list[PromptError]]:
    problems: list[PromptError] = []
    file_name = "the file name" if stem is None else "the prompt it stands in for"
    stem = stem or path.stem

    def fail(line: int | None, reason: str) -> None:
        problems.append(PromptError(path, line, reason))

    def broken(line: int, reason: str) -> tuple[None, list[PromptError]]:
        return None, [PromptError(path, line, reason)]

    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return broken(raw[:exc.start].count(b"\n") + 1, "the file is not valid UTF-8 text; save it as UTF-8")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[0].strip() != "---":
        return broken(1, "missing front matter: the file must start with a '---' line, then YAML keys "
                         "(name:, description:, ...), then another '---' line")
    close = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
    if close is None:
        return broken(1, "the front matter is not closed: add a '---' line after the YAML keys")
    loader = yaml.SafeLoader("\n".join(lines[1:close]))
    try:
        root = loader.get_single_node()
        duplicates = list(_duplicate_keys(root))  # before constructing, which flattens YAML merge keys
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        detail = " ".join(filter(None, [getattr(exc, "context", None), getattr(exc, "problem", None)]))
        return broken(mark.line + 2 if mark else 1, f"invalid YAML in the front matter: {detail or exc}")
    finally:
        loader.dispose()
    if data is None:
        return broken(1, f"the front matter is empty; it needs at least 'name: {stem}'")
    if not isinstance(data, dict):
        return broken(1, "the front matter must be YAML keys (name:, description:, ...), "
                         f"not a {type(data).__name__}")
    at = partial(_line, root)
    for line, reason in duplicates:
        fail(line, reason)
    dropped = _drop_references(data, (), at, fail)
    _unknown(data, TOP_KEYS, (), "", at, fail)

    name = data.get("name")
    if name is None:
        fail(1, f"'name' is missing; add 'name: {stem}' (it must match {file_name})")
    elif name != stem:
        fail(at("name"), f"name: must equal {file_name} '{stem}', got {name!r}")
    if not NAME_RE.match(stem):
        fail(at("name"), f"the file name '{stem}' must use only lowercase letters, digits, "
                         "'-' and '_' (it is also the skill name)")
    description = data.get("description", "")
    if not isinstance(description, str) or len(description) > 2000:
        fail(at("description"), "description: must be text of at most 2000 characters (Slack's limit)")
        description = ""
    model_id, options = _check_model(data.get("model"), at, fail)
    command, usage_hint, feedback, channels = _check_metadata(data.get("metadata"), at, fail)
    experiment = _check_experiment(data.get("metadata"), at, fail)
    in_slack = not (isinstance(data.get("metadata"), dict) and data["metadata"].get("slack") is False)
    if command and not description.strip():
        fail(at("metadata", "slack", "command"),
             "description: is required for a slash command (Slack shows it in the command menu)")
    inputs, excused = _check_inputs(data.get("inputs"), at, fail)
    if ("inputs",) in dropped:
        excused = None  # the inputs are in another file: no variable can be called unknown
    if not _check_template(data.get("template"), at, fail):
        return None, problems  # the body is not Jinja2: compiling it would only add noise
    # a variable whose input was reported above (or all of them, if inputs: itself was) is not reported again
    quiet = None if excused is None else set(KNOWN_VARIABLES) | set(inputs) | excused
    blocks, used = compile_body(lines[close + 1:], close + 2, quiet, fail)
    if problems:
        return None, problems
    warnings = () if "text" in used else (PromptError(path, blocks[-1].marker_line, (
        "the template never uses {{ text }}, so what people write is not sent to the model (unless the last "
        "message renders empty); put {{ text }} where their words belong")),)

    prompt = Prompt(name=stem, description=description.strip(), path=path,  # name == stem, checked above
                    version=hashlib.sha256(raw).hexdigest(), source=text, model=model_id,
                    options=options, command=command, usage_hint=usage_hint, feedback=feedback,
                    inputs=inputs, uses_thread="thread" in used, warnings=warnings, slack=in_slack,
                    experiment=experiment, channels=channels, _blocks=tuple(blocks),
                    _command_line=at("metadata", "slack", "command") if command else None)
    try:  # a trial render catches runtime template errors now, not in a user's thread
        for sample, thread in (("example request", "someone: example message"), ("", "")):
            prompt.messages(sample, user="U0", channel="C0", thread=thread)
    except PromptError as exc:
        return None, [exc]
    return prompt, []


_REFERENCE_RE = re.compile(r"^\$\{(env|file):.*\}$")
_READ_KEYS = ("name", "description", "model", "inputs", "template", "metadata")  # what Flywheel uses
_READ_MODEL_KEYS = ("id", "api", "apiType", "provider", "options")


def _drop_references(node: Any, where: tuple, at: _At, fail: _Fail) -> set[tuple]:
    """Report (and drop, so nothing else trips on them) Prompty's ${env:...} / ${file:...} values.

    Flywheel reads its environment in one place (its settings) and a prompt is one file. In what
    Flywheel ignores they are harmless, model.connection included: the bot's settings replace it.
    """
    items = list(node.items()) if isinstance(node, dict) else list(enumerate(node)) if isinstance(node, list) else []
    dropped: set[tuple] = set()
    for key, value in items:
        path = (*where, key)
        if path[0] not in _READ_KEYS or (path[0] == "model" and len(path) > 1 and path[1] not in _READ_MODEL_KEYS):
            continue  # ignored (or reported as unknown) anyway
        found = _REFERENCE_RE.match(value) if isinstance(value, str) else None
        if found:
            fail(at(*path), f"{'.'.join(map(str, path))}: Prompty's ${{{found.group(1)}:...}} references are not "
                            "supported; write the value itself")
            if isinstance(node, dict):
                del node[key]
                dropped.add(path)
        else:
            dropped |= _drop_references(value, path, at, fail)
    return dropped


def _check_model(model: Any, at: _At, fail: _Fail) -> tuple[str | None, dict[str, Any]]:
    if isinstance(model, str):  # Prompty's shorthand: `model: gpt-4o` is its id
        model = {"id": model} if model.strip() else None
    if not isinstance(model, dict | None):
        fail(at("model"), "model: must be a mapping with keys like id: and options:")
    if not isinstance(model, dict):
        return None, {}
    _unknown(model, MODEL_KEYS, ("model",), "model", at, fail)
    wrong_api = [key for key in ("api", "apiType") if key in model and model[key] != "chat"]
    for key in wrong_api:
        fail(at("model", key), f"model.{key}: only 'chat' is supported, got {model[key]!r}")
    if wrong_api:
        return None, {}  # options meant for another API (image sizes...) would only add noise
    model_id = model.get("id")
    if model_id is not None and not (isinstance(model_id, str) and model_id.strip()):
        fail(at("model", "id"), f"model.id: must be a model name such as gpt-5-mini, got {model_id!r}")
        model_id = None
    return (model_id.strip() if model_id else None), _check_options(model.get("options"), at, fail)


def _check_options(raw: Any, at: _At, fail: _Fail) -> dict[str, Any]:
    """``model.options`` as OpenAI request parameters, in our spelling or Prompty 2's."""
    raw = raw or {}
    if not isinstance(raw, dict):
        fail(at("model", "options"), "model.options: must be a mapping such as {max_tokens: 800}")
        return {}
    written: list[tuple[str, Any, tuple]] = []  # (OpenAI name, value, key path in the file)
    for key, value in raw.items():
        if key != "additionalProperties":
            written.append((_PROMPTY_OPTIONS.get(key) or key, value, ("model", "options", key)))
        elif isinstance(value, dict):
            written += [(k, v, ("model", "options", key, k)) for k, v in value.items()]
        else:
            fail(at("model", "options", key), "model.options.additionalProperties: must be a mapping")
    options: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for name, value, where in written:
        label = ".".join(map(str, where))
        if name == "stream" and value is True:
            continue  # Flywheel always streams
        if name == "stream":
            fail(at(*where), f"{label}: Flywheel always streams its answers; leave this out")
        elif name == "topK":
            fail(at(*where), f"{label}: not supported (OpenAI's chat API has no top_k)")
        elif name not in _OPTIONS:
            fail(at(*where), f"{label}: unknown key (allowed: {', '.join(_OPTIONS)}; or Prompty's "
                             f"{', '.join(_PROMPTY_OPTIONS)}, additionalProperties)")
        elif not _OPTIONS[name][0](value):
            fail(at(*where), f"{label}: must be {_OPTIONS[name][1]}, got {value!r}")
        elif name in options:
            fail(at(*where), f"{label}: {name} is already set, at line {lines[name]}")
        else:
            options[name], lines[name] = value, at(*where)
    if "max_tokens" in options and "max_completion_tokens" in options:
        fail(max(lines["max_tokens"], lines["max_completion_tokens"]),
             "model.options: set either max_tokens or max_completion_tokens (Prompty: maxOutputTokens), not both")
    return options


def _kind(value: Any, what: str, at: _At, where: tuple, fail: _Fail) -> str | None:
    """The ``kind`` of a Prompty format/parser setting, written as ``jinja2`` or ``{kind: jinja2}``.

    None or Prompty's ``*`` / empty kind means "the default". Settings that would change how
    the template renders (``options``) are reported rather than ignored.
    """
    if value is None or isinstance(value, str):
        return value or None
    if not isinstance(value, dict):
        fail(at(*where), f"{what}: must be a name such as jinja2, or {{kind: jinja2}}, got {value!r}")
        return None
    _unknown(value, ("kind", "strict", "options"), where, what, at, fail)
    if value.get("options"):
        fail(at(*where, "options"), f"{what}.options: not supported (Flywheel renders with fixed settings)")
    if not isinstance(value.get("strict", False), bool):
        fail(at(*where, "strict"), f"{what}.strict: must be true or false")
    kind = value.get("kind")
    if kind is not None and not isinstance(kind, str):
        fail(at(*where, "kind"), f"{what}.kind: must be a name such as jinja2, got {kind!r}")
        return None
    return kind or None


def _check_template(template: Any, at: _At, fail: _Fail) -> bool:
    """Prompty's ``template`` setting, in each shape Prompty reads; whether the body is Jinja2.

    ``template: jinja2`` (shorthand), ``{format: jinja2, parser: prompty}`` (Prompty 1; its
    older ``type:`` for ``format:`` too) and ``{format: {kind: jinja2}, parser: {kind: prompty}}``
    (Prompty 2). ``strict`` is accepted: Flywheel always splits the messages before filling in
    variables, so a person's text can never add a role marker.
    """
    if template is None:
        return True
    where: tuple[str, ...]
    if isinstance(template, str):
        fmt, parser, where = template or None, None, ("template",)
    elif isinstance(template, dict):
        _unknown(template, ("format", "type", "parser", "strict", "options"), ("template",), "template", at, fail)
        if "format" in template and "type" in template:
            fail(at("template", "type"), "template: set format or type (its older name), not both")
        key = "type" if "type" in template else "format"
        where = ("template", key)
        if template.get("options"):
            fail(at("template", "options"), "template.options: not supported (Flywheel renders with fixed settings)")
        if not isinstance(template.get("strict", False), bool):
            fail(at("template", "strict"), "template.strict: must be true or false")
        fmt = _kind(template.get(key), f"template.{key}", at, where, fail)
        parser = _kind(template.get("parser"), "template.parser", at, ("template", "parser"), fail)
    else:
        fail(at("template"), f"template: must be jinja2, or {{format: {{kind: jinja2}}}}, got {template!r}")
        return False
    if parser not in (None, "*", "prompty"):
        fail(at("template", "parser", "kind"), f"template.parser: only Prompty's own parser ('prompty') is "
                                               f"supported, got {parser!r}")
    if fmt in (None, "*", "jinja2"):
        return True
    hint = (" (Prompty's TypeScript runtime renders Jinja2-like templates with nunjucks; if this one uses only "
            "syntax Jinja2 shares, set the kind to jinja2)" if fmt == "nunjucks" else "")
    fail(at(*where, "kind"), f"template: the {fmt!r} format is not supported; Flywheel renders Jinja2 "
                             f"templates only (format kind 'jinja2'){hint}")
    return False


def _check_metadata(metadata: Any, at: _At, fail: _Fail
                    ) -> tuple[str | None, str, dict[str, Any], frozenset[str] | None]:
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        fail(at("metadata"), "metadata: must be a mapping (slack:, feedback:, ...)")
        return None, "", {}, None
    slack = metadata.get("slack") or {}
    if not isinstance(slack, dict):
        fail(at("metadata", "slack"), "metadata.slack: must be a mapping with command: and usage_hint: (or false: "
             "not a Slack skill)")
        slack = {}
    _unknown(slack, SLACK_KEYS, ("metadata", "slack"), "metadata.slack", at, fail)
    command, usage_hint = slack.get("command"), slack.get("usage_hint") or ""
    if command is not None and not (isinstance(command, str) and COMMAND_RE.match(command)):
        fail(at("metadata", "slack", "command"), "metadata.slack.command: must be '/' followed by 1-31 "
             f"lowercase letters, digits, '-' or '_' (Slack's rule), got {command!r}")
        command = None
    if not isinstance(usage_hint, str) or len(usage_hint) > 1000:
        fail(at("metadata", "slack", "usage_hint"),
             "metadata.slack.usage_hint: must be text of at most 1000 characters")
        usage_hint = ""
    channels = slack.get("channels")
    if channels is not None:
        if not (isinstance(channels, list) and channels
                and all(isinstance(c, str) and CHANNEL_RE.match(c) for c in channels)):
            fail(at("metadata", "slack", "channels"), "metadata.slack.channels: must be a list of channel ids "
                 f"(C…, from the channel's details), got {channels!r}")
            channels = None
        else:
            channels = frozenset(channels)
    feedback = metadata.get("feedback") or {}
    if not isinstance(feedback, dict):
        fail(at("metadata", "feedback"), "metadata.feedback: must be a mapping (buttons:, fix:, regenerate:)")
        feedback = {}
    _unknown(feedback, tuple(FEEDBACK_DEFAULTS), ("metadata", "feedback"), "metadata.feedback", at, fail)
    checked = dict(FEEDBACK_DEFAULTS)
    for key in FEEDBACK_DEFAULTS:
        if key in feedback:
            if isinstance(feedback[key], bool):
                checked[key] = feedback[key]
            else:
                fail(at("metadata", "feedback", key), f"metadata.feedback.{key}: must be true or false, "
                     f"got {feedback[key]!r}")
    return command, usage_hint.strip(), checked, channels


def _check_experiment(metadata: Any, at: _At, fail: _Fail) -> Declaration | None:
    """``metadata.experiment`` (see bot.experiments): ``weight`` in percent, optional ``name`` and ``start``."""
    if not isinstance(metadata, dict) or metadata.get("experiment") is None:
        return None
    block, where = metadata["experiment"], ("metadata", "experiment")
    if not isinstance(block, dict):
        fail(at(*where), "metadata.experiment: must be a mapping (weight:, and optionally name: and start:)")
        return None
    _unknown(block, ("name", "weight", "start"), where, "metadata.experiment", at, fail)
    name = block.get("name")
    if name is not None and not (isinstance(name, str) and NAME_RE.match(name) and len(name) <= 100):
        fail(at(*where, "name"), "metadata.experiment.name: must be lowercase letters, digits, '-' and '_' "
                                 f"(at most 100), got {name!r}")
        name = None
    weight = block.get("weight")
    if weight is None:
        fail(at(*where), "metadata.experiment.weight: missing; the percent of people who get this variant "
                         "(e.g. 'weight: 50'; the control keeps the rest)")
        weight = 0
    elif isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= 100:
        fail(at(*where, "weight"), f"metadata.experiment.weight: must be a percent above 0 and at most 100, "
                                   f"got {weight!r}")
        weight = 0
    start = block.get("start")
    when: dt.datetime | None = None
    if start is not None:
        if isinstance(start, dt.datetime):
            when = start
        elif isinstance(start, dt.date):
            when = dt.datetime.combine(start, dt.time())
        elif isinstance(start, str):
            with contextlib.suppress(ValueError):
                when = dt.datetime.fromisoformat(start.strip())
        if when is None:
            fail(at(*where, "start"), "metadata.experiment.start: must be a date or a date and time "
                                      f"(2026-12-08 or 2026-12-08T09:00:00Z; UTC unless it says), got {start!r}")
        elif when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
    return Declaration(name, float(weight), when, at(*where))


def _experiments(prompts: dict[str, Prompt], variants: list[tuple[str, Prompt]],
                 problems: list[PromptError]) -> dict[str, Experiment]:
    """Group variant files (``NAME.ARM.prompty``) into one experiment per prompt. A variant
    that cannot run is reported and left out: its share of people gets the control."""
    by_prompt: dict[str, list[tuple[str, Prompt]]] = {}
    for arm, variant in variants:
        control = prompts.get(variant.name)
        declared = variant.experiment
        if control is None:
            problems.append(PromptError(variant.path, None, (
                f"a variant of '{variant.name}', but {variant.name}.prompty is missing or has errors; "
                "this variant runs only beside the prompt it varies")))
        elif declared is None:
            problems.append(PromptError(variant.path, None, (
                "a variant file (NAME.ARM.prompty) needs a metadata.experiment block with weight: (the "
                "percent of people who get it); see prompts/README.md")))
        elif arm == CONTROL:
            problems.append(PromptError(variant.path, None, (
                f"'{CONTROL}' is the control's arm (the plain {variant.name}.prompty); name the variant "
                f"{variant.name}.b.prompty, or any other word")))
        elif variant.command != control.command:
            problems.append(PromptError(variant.path, variant._command_line or declared.line, (
                f"metadata.slack.command: a variant must keep its prompt's command ({control.command or 'none'}), "
                f"got {variant.command or 'none'}")))
        else:
            by_prompt.setdefault(variant.name, []).append((arm, variant))
    experiments: dict[str, Experiment] = {}
    for name, arms in sorted(by_prompt.items()):
        declarations = [(v, v.experiment) for _, v in arms if v.experiment is not None]
        names = {d.name or name for _, d in declarations}
        starts = {d.start for _, d in declarations if d.start is not None}
        total = sum(d.weight for _, d in declarations)
        reason = None
        if len(names) > 1:
            reason = (f"the variants of '{name}' name different experiments ({', '.join(sorted(names))}); "
                      "one experiment per prompt at a time: give them the same metadata.experiment.name")
        elif len(starts) > 1:
            reason = f"the variants of '{name}' give different metadata.experiment.start dates: give them one"
        elif total > 100:
            reason = (f"the variants of '{name}' add up to {total:g} % of people (metadata.experiment.weight); "
                      "at most 100")
        if reason is not None:  # which arm is at fault is anyone's guess: none of them runs
            problems += [PromptError(v.path, d.line, f"{reason}; everyone gets {name}.prompty meanwhile")
                         for v, d in declarations]
            continue
        experiments[name] = Experiment(
            name=names.pop(), prompt=name, control=prompts[name], start=starts.pop() if starts else None,
            variants=tuple(Variant(arm, v.experiment.weight, v) for arm, v in sorted(arms)
                           if v.experiment is not None))
    return experiments


_RICH_KINDS = {  # Prompty's input kinds that are not text
    "thread": "Flywheel adds the Slack thread itself, as conversation turns just before the last message "
              "(or use {{ thread }} for it as a transcript)",
    **{k: "Flywheel sends the model text only" for k in ("image", "file", "audio")}}
_SHORTHAND_TYPES = {bool: "boolean", int: "integer", float: "float", list: "array", dict: "object"}


def _check_inputs(raw: Any, at: _At, fail: _Fail) -> tuple[dict[str, Any], set[str] | None]:
    """The declared inputs, and the names of those reported (None: ``inputs:`` itself was reported)."""
    if isinstance(raw, dict):
        items = [(name, spec, ("inputs", name)) for name, spec in raw.items()]
    elif isinstance(raw, list):
        items = [(spec.get("name") if isinstance(spec, dict) else None, spec, ("inputs", i))
                 for i, spec in enumerate(raw)]
    else:
        if raw is None:
            return {}, set()
        fail(at("inputs"), "inputs: must be a mapping (name: {type, default, description}) or a list")
        return {}, None
    inputs: dict[str, Any] = {}
    excused: set[str] = set()
    for name, spec, where in items:
        if spec is None:
            spec = {}
        elif not isinstance(spec, dict):  # Prompty's shorthand `style: bullets` is the input's default
            spec = {"type": _SHORTHAND_TYPES.get(type(spec), "string"), "default": spec}
        if not (isinstance(name, str) and name.isidentifier()):
            fail(at(*where), f"inputs: {name!r} is not a valid variable name (letters, digits, '_')"
                 if name is not None else "inputs: each item of the list needs a name: key")
            continue
        _unknown(spec, INPUT_KEYS, where, f"inputs.{name}", at, fail)
        kind = spec.get("kind", spec.get("type", "string"))
        if kind in _RICH_KINDS:
            fail(at(*where, "kind" if "kind" in spec else "type"), f"inputs.{name}: kind {kind!r} is not supported: "
                                                                   f"{_RICH_KINDS[kind]}")
            excused.add(name)
            continue
        if spec.get("default") is None and name not in KNOWN_VARIABLES:
            fail(at(*where), f"inputs.{name}: needs a default, because the bot fills only "
                             f"{', '.join(KNOWN_VARIABLES)} (if this is where the person's words go, "
                             "use {{ text }} instead)")
        inputs[name] = {"type": kind, "default": spec.get("default"), "description": spec.get("description", "")}
    return inputs, excused


