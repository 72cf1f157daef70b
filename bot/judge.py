"""The pairwise judge of `flywheel replay`: a prompt file that sees one request and two answers.

A judge prompt (shipped: ``prompts/judge.prompty``, kept out of Slack by ``metadata: {slack:
false}``) declares the inputs ``answer_a`` and ``answer_b``; ``{{ text }}`` is the request and
``{{ thread }}`` the conversation before it. It ends its answer with ``Verdict: A``, ``Verdict: B``
or ``Verdict: tie``; `verdict()` also reads a bare ``A`` or ``**B**``, and the last verdict wins.

Judges favour a position (often the first). Replay puts the candidate's answer first for half of
the inputs, chosen at random from a seed (`positions()`), so a judge that always says "A" scores
the candidate 50 %, not 100 %.
"""

from __future__ import annotations

import random
import re
from typing import Any, Literal

from bot.errors import PromptError
from bot.prompts import Prompt

Verdict = Literal["A", "B", "tie"]
INPUTS = ("answer_a", "answer_b")
_WORDS = {"a": "A", "b": "B", "tie": "tie", "draw": "tie", "equal": "tie", "same": "tie", "both": "tie",
          "neither": "tie"}
# "Verdict: A", "verdict - **B**", "Final verdict: [[tie]]", "Verdict: answer A", "verdict: a tie"
_VERDICT = re.compile(r"verdict\s*(?:is\s*)?[:=\-–—]?[\s*_`'\"\[(]*(?:answer\s+|an?\s+(?=tie|draw))?(tie|draw|equal|same|both|neither|a|b)"
                      r"\b(?![ \t]*(?:tie|draw))", re.I)


def check_judge(prompt: Prompt) -> None:
    """Raise PromptError unless ``prompt`` can judge (it declares answer_a and answer_b)."""
    missing = [name for name in INPUTS if name not in prompt.inputs]
    if missing:
        raise PromptError(prompt.path, None, (
            f"a judge prompt must declare the inputs {' and '.join(INPUTS)} (missing: {', '.join(missing)}) "
            "and use them in its template; see prompts/judge.prompty"))


def judge_messages(judge: Prompt, *, text: str, thread: str, answer_a: str, answer_b: str,
                   date: str | None = None) -> list[dict[str, Any]]:
    return judge.messages(text, [], thread=thread, answer_a=answer_a, answer_b=answer_b, date=date)


def verdict(answer: str) -> Verdict | None:
    """The judge's verdict: the last ``Verdict: …`` line, else an answer that is only A, B or tie."""
    found = _VERDICT.findall(answer)
    if found:
        return _WORDS[found[-1].lower()]  # type: ignore[return-value]
    bare = re.sub(r"[\W_]+", " ", answer).strip().lower().removeprefix("answer ")
    return _WORDS.get(bare)  # type: ignore[return-value]


def positions(n: int, seed: int) -> list[str]:
    """Where the candidate's answer goes for each of ``n`` inputs: "A" for half of them, "B" for
    the other half (one more "A" when ``n`` is odd), in an order drawn from ``seed``."""
    order = ["A" if i % 2 == 0 else "B" for i in range(n)]
    random.Random(seed).shuffle(order)
    return order


def outcome(position: str, said: Verdict) -> str:
    """The candidate's result: win, tie or loss."""
    if said == "tie":
        return "tie"
    return "win" if said == position else "loss"
