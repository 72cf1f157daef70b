"""`flywheel experiment status`: how each arm of each A/B experiment is doing, and a verdict.

One result object per experiment (:class:`ExperimentStatus`), computed here and formatted by
the terminal table and ``--json`` (bot/experiment_cli.py) and the Home tab (bot/home.py) alike.

Per arm: calls, rated answers (answers with at least one vote), approval = answers with more
👍 than 👎 over answers with more of either (each person once, their latest vote, as in
`flywheel stats`), its 95 % Wilson interval, cost and median latency.

The verdict compares every variant with the control (arm ``a``): Fisher's exact test when the
2x2 table is small (an expected count below 5), else the two-proportion z-test; with several
variants the p-values are Bonferroni-adjusted. ``better:ARM`` when the adjusted p-value is below
0.05; otherwise ``no_difference`` once every arm has the rated answers needed to detect, at 80 %
power, the observed difference or :data:`MIN_EFFECT` if that is larger; otherwise ``running``,
with ``needed_per_arm`` the rated answers each arm still needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from bot.experiments import CONTROL
from bot.figures import Approval, pct
from bot.significance import ALPHA, POWER, compare, sample_size

if TYPE_CHECKING:
    from bot.prompts import PromptSet
    from bot.store import Store

MIN_EFFECT = 0.05  # the smallest difference in approval worth detecting: 5 points
SHORT_VERSION = 12

State = Literal["running", "scheduled", "ended"]


@dataclass
class ArmStatus(Approval):  # approval and approval_interval, as in `flywheel stats`
    arm: str
    weight: float | None  # percent of people; None once the experiment's files are gone
    version: str | None  # the arm's file now (running), else the version it last ran with
    versions: list[str] = field(default_factory=list)  # every version logged for the arm, oldest first
    calls: int = 0
    rated: int = 0
    up: int = 0
    down: int = 0
    errors: int = 0
    cost_usd: float | None = None
    priced_calls: int = 0
    latency_p50_ms: int | None = None
    p_value: float | None = None  # against the control (unadjusted); None for the control itself
    _last: datetime | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        interval = self.approval_interval
        return {
            "arm": self.arm, "version": self.version, "versions": self.versions, "weight": self.weight,
            "calls": self.calls, "rated": self.rated, "up": self.up, "down": self.down,
            "approval": self.approval, "approval_low": interval[0] if interval else None,
            "approval_high": interval[1] if interval else None, "errors": self.errors,
            "cost_usd": self.cost_usd, "cost_per_call_usd": _per_call(self.cost_usd, self.priced_calls),
            "latency_p50_ms": self.latency_p50_ms, "p_value": self.p_value,
        }


@dataclass
class ExperimentStatus:
    name: str
    prompt: str
    state: State
    start: datetime | None
    arms: list[ArmStatus]
    test: str | None = None  # "fisher" | "z": of the comparison that decides
    p_value: float | None = None  # Bonferroni-adjusted, of the deciding comparison
    needed_per_arm: int | None = None  # more rated answers each arm needs; None: cannot tell yet
    required_per_arm: int | None = None  # in all
    effect: float | None = None  # the difference the sample size is for
    verdict: str = "running"  # running | better:ARM | no_difference
    summary: str = ""  # the verdict in words

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "prompt": self.prompt, "state": self.state,
            "start": self.start.isoformat() if self.start else None,
            "arms": [a.to_json() for a in self.arms], "test": self.test, "p_value": self.p_value,
            "needed_per_arm": self.needed_per_arm, "required_per_arm": self.required_per_arm,
            "verdict": self.verdict, "summary": self.summary,
        }


# -- figures ----------------------------------------------------------------------------------


async def experiment_status(store: Store, prompts: PromptSet | None, *, name: str | None = None,
                            sources: list[str] | None = None, models: list[str] | None = None,
                            now: datetime | None = None) -> list[ExperimentStatus]:
    """Every experiment the prompt files declare now or the log remembers, running ones first."""
    rows = await store.experiment_figures(name=name, sources=sources or ["slack"], models=models)
    running = {e.name: e for e in (prompts.experiments.values() if prompts is not None else ())
               if name is None or e.name == name}
    found: dict[str, ExperimentStatus] = {}
    for experiment in running.values():
        versions = experiment.versions
        found[experiment.name] = ExperimentStatus(
            experiment.name, experiment.prompt, "running" if experiment.started(now) else "scheduled",
            experiment.start, [ArmStatus(arm, weight, versions[arm]) for arm, weight in experiment.weights.items()])
    for row in sorted(rows, key=lambda r: r["first_call_at"] or datetime.min.replace(tzinfo=UTC)):
        status = found.get(row["experiment"])
        if status is None:
            status = found[row["experiment"]] = ExperimentStatus(row["experiment"], row["prompt_name"], "ended",
                                                                 None, [])
        arm = next((a for a in status.arms if a.arm == row["arm"]), None)
        if arm is None:
            arm = ArmStatus(row["arm"], None, None)
            status.arms.append(arm)
        arm.versions.append(row["prompt_version"])
        arm.calls += int(row["calls"])
        arm.rated += int(row["rated"])
        arm.up += int(row["up"])
        arm.down += int(row["down"])
        arm.errors += int(row["errors"])
        if row["cost_usd"] is not None:
            arm.cost_usd = round((arm.cost_usd or 0.0) + float(row["cost_usd"]), 6)
        arm.priced_calls += int(row["priced_calls"])
        arm.latency_p50_ms = row["latency_p50_ms"]
        if status.state == "ended" and (arm._last is None or row["last_call_at"] > arm._last):
            arm.version, arm._last = row["prompt_version"], row["last_call_at"]
    for status in found.values():
        status.arms.sort(key=lambda a: (a.arm != CONTROL, a.arm))
        _decide(status)
    order = {"running": 0, "scheduled": 1, "ended": 2}
    return sorted(found.values(), key=lambda s: (order[s.state], s.name))


def _decide(status: ExperimentStatus) -> None:
    """Test each variant against the control and say what the figures mean (module docstring)."""
    control = next((a for a in status.arms if a.arm == CONTROL), None)
    variants = [a for a in status.arms if a.arm != CONTROL]
    if control is None or not variants:
        status.summary = "no control arm logged: nothing to compare" if variants else "no variant logged yet"
        return
    if control.up + control.down == 0 or all(v.up + v.down == 0 for v in variants):
        waiting = [a.arm for a in status.arms if a.up + a.down == 0]
        status.summary = f"no votes yet on arm {', '.join(waiting)}: not yet significant"
        return
    k = len(variants)
    alpha = ALPHA / k  # Bonferroni: k comparisons with the control
    n_c = control.up + control.down
    p_c = control.up / n_c
    best: tuple[float, float, ArmStatus, str] | None = None  # (adjusted p, -|difference|, arm, test)
    shortfalls: list[tuple[int, int, float]] = []  # (more needed per arm, needed in all, effect) per variant
    for variant in variants:
        n_v = variant.up + variant.down
        if n_v == 0:  # no votes on this arm yet: it needs the sample for the smallest effect
            n = sample_size(p_c, _shifted(p_c, MIN_EFFECT, up=True), alpha=alpha) or 0
            shortfalls.append((n, n, MIN_EFFECT))
            continue
        test, p = compare(variant.up, n_v, control.up, n_c)
        variant.p_value = p
        p_v = variant.up / n_v
        candidate = (min(1.0, p * k), -abs(p_v - p_c), variant, test)
        if best is None or candidate[:2] < best[:2]:
            best = candidate
        effect = max(abs(p_v - p_c), MIN_EFFECT)
        n = sample_size(p_c, _shifted(p_c, effect, up=p_v >= p_c), alpha=alpha) or 0
        shortfalls.append((max(0, n - min(n_c, n_v)), n, effect))
    assert best is not None
    p_value, _, variant, test = best
    status.test, status.p_value = test, p_value
    a, b = control, variant
    pa, pb = a.approval or 0.0, b.approval or 0.0
    test_name = "Fisher's exact test" if test == "fisher" else "two-proportion z-test"
    if k > 1:
        test_name += f", adjusted for {k} comparisons"
    if p_value < ALPHA:
        winner, loser = (b, a) if pb > pa else (a, b)
        status.verdict = f"better:{winner.arm}"
        status.summary = (f"{winner.arm} is better: {pct(winner.approval)} vs {pct(loser.approval)} approval "
                          f"(p = {_p(p_value)}, {test_name})")
        status.needed_per_arm, status.required_per_arm = 0, None
        return
    status.needed_per_arm, status.required_per_arm, status.effect = max(shortfalls)
    if status.needed_per_arm == 0:
        status.verdict = "no_difference"
        status.summary = (f"no difference: {pct(pa)} vs {pct(pb)} approval (p = {_p(p_value)}); with "
                          f"{min(x.up + x.down for x in status.arms):,} rated answers per arm a difference of "
                          f"{MIN_EFFECT * 100:.0f} points or more would have shown ({POWER * 100:.0f} % power)")
    else:
        status.summary = (f"not yet significant (p = {_p(p_value)}) — about {status.needed_per_arm:,} more rated "
                          f"answer{'s' if status.needed_per_arm != 1 else ''} per arm to detect a "
                          f"{status.effect * 100:.0f}-point difference ({POWER * 100:.0f} % power)")


def _shifted(p: float, effect: float, *, up: bool) -> float:
    """``p`` moved by ``effect`` (upwards if ``up`` and there is room, else downwards)."""
    return p + effect if (up and p + effect <= 1) or p - effect < 0 else p - effect


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _per_call(cost: float | None, priced: int) -> float | None:
    return round(cost / priced, 6) if cost is not None and priced else None
