"""Live A/B experiments: which arm of a prompt a person gets.

A prompt runs an experiment when its folder holds variant files next to it:
``prompts/ask.prompty`` is the control (arm ``a``) and ``prompts/ask.b.prompty`` a variant
(arm ``b``; any lowercase word works, ``ask.short.prompty`` is arm ``short``). A variant
declares ``name: ask`` and a ``metadata.experiment`` block::

    metadata:
      experiment:
        name: ask-shorter   # optional; default: the prompt's name
        weight: 50          # percent of people who get this arm; the control keeps the rest
        start: 2026-12-08   # optional; before it (UTC) everyone gets the control

Assignment is sticky per person: a salted hash of (experiment name, user id) picks a point in
[0, 100) and the arms own consecutive slices of that range by their weights, so the same person
gets the same arm on every call, in every process, with nothing stored. Ending an experiment is
promoting one file: delete the variant (the control wins) or move it over the control (it
wins; its version is the one its arm was logged with). Calls keep their experiment and arm, so
the history stays queryable after the files are gone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.prompts import Prompt

CONTROL = "a"  # the arm of the plain file
BUCKETS = 10_000  # resolution of the weights: 0.01 %


@dataclass(frozen=True)
class Declaration:
    """A variant file's ``metadata.experiment`` block, as written (checked in bot.prompts)."""

    name: str | None
    weight: float  # percent, 0 < weight <= 100
    start: dt.datetime | None  # aware UTC
    line: int | None = None  # where the block is, for messages about it


@dataclass(frozen=True)
class Variant:
    arm: str
    weight: float
    prompt: Prompt


@dataclass(frozen=True)
class Experiment:
    """One prompt's experiment, as its files declare it now."""

    name: str
    prompt: str
    control: Prompt
    variants: tuple[Variant, ...]
    start: dt.datetime | None = None

    @property
    def control_weight(self) -> float:
        return max(0.0, 100.0 - sum(v.weight for v in self.variants))

    @property
    def weights(self) -> dict[str, float]:
        """Every arm's share in percent, the control first."""
        return {CONTROL: self.control_weight, **{v.arm: v.weight for v in self.variants}}

    @property
    def versions(self) -> dict[str, str]:
        return {CONTROL: self.control.version, **{v.arm: v.prompt.version for v in self.variants}}

    def started(self, now: dt.datetime | None = None) -> bool:
        return self.start is None or (now or dt.datetime.now(dt.UTC)) >= self.start

    def arm_for(self, user_id: str) -> str:
        """The arm this person gets (sticky: a function of the experiment's name and the id)."""
        point = bucket(self.name, user_id)
        share = 0.0
        for variant in self.variants:
            share += variant.weight
            if point < round(share * BUCKETS / 100):
                return variant.arm
        return CONTROL


@dataclass(frozen=True)
class Assignment:
    """The prompt to run for one call, and the experiment and arm to log with it (None: none)."""

    prompt: Prompt
    experiment: str | None = None
    arm: str | None = None


def bucket(experiment: str, user_id: str) -> int:
    """A point in [0, BUCKETS) for this person in this experiment. The experiment's name salts
    the hash, so two experiments split people independently of each other."""
    digest = hashlib.sha256(f"flywheel-experiment\x00{experiment}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def choose(experiment: Experiment | None, prompt: Prompt, user_id: str | None,
           now: dt.datetime | None = None) -> Assignment:
    """The arm of ``experiment`` (the one running on ``prompt``, if any) that ``user_id`` gets.
    No experiment, no person to be sticky for, or not started yet: the prompt as it is, untagged."""
    if experiment is None or not user_id or not experiment.started(now):
        return Assignment(prompt)
    arm = experiment.arm_for(user_id)
    chosen = next((v.prompt for v in experiment.variants if v.arm == arm), prompt)
    return Assignment(chosen, experiment.name, arm)
