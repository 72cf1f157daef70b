"""Cost of a model call from its token counts.

The price table is data (`bot/prices.json`, USD per 1M tokens); a team can
override or extend it with a file of the same shape (`FLYWHEEL_PRICES`).
A model with no known price costs ``None``: unknown, not zero, not an error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from bot.errors import ConfigError

BUILTIN = Path(__file__).with_name("prices.json")
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Price:
    model: str
    input: float  # USD per 1M prompt tokens
    output: float  # USD per 1M completion tokens
    cached_input: float | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        cached = min(cached_tokens, prompt_tokens) if self.cached_input is not None else 0
        total = (
            (prompt_tokens - cached) * self.input
            + cached * (self.cached_input or 0.0)
            + completion_tokens * self.output
        )
        return round(total / 1_000_000, 10)


class PriceTable:
    def __init__(self, prices: dict[str, Price]):
        self._prices = prices

    @classmethod
    def load(cls, override: Path | None = None) -> PriceTable:
        prices = _read(BUILTIN)
        if override is not None:
            prices.update(_read(override))
        return cls(prices)

    def price(self, model: str | None) -> Price | None:
        if not model:
            return None
        name = model.lower()
        return self._prices.get(name) or self._prices.get(_SNAPSHOT.sub("", name))

    def cost(self, model: str | None, prompt_tokens: int | None, completion_tokens: int | None,
             cached_tokens: int = 0) -> float | None:
        price = self.price(model)
        if price is None or prompt_tokens is None or completion_tokens is None:
            return None
        return price.cost(prompt_tokens, completion_tokens, cached_tokens)

    def __len__(self) -> int:
        return len(self._prices)


def _read(path: Path) -> dict[str, Price]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        models = doc["models"]
        return {
            name.lower(): Price(
                model=name,
                input=float(p["input"]),
                output=float(p["output"]),
                cached_input=float(p["cached_input"]) if p.get("cached_input") is not None else None,
            )
            for name, p in models.items()
        }
    except FileNotFoundError:
        raise ConfigError([f"FLYWHEEL_PRICES points to {path}, which does not exist"]) from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError([
            f"FLYWHEEL_PRICES file {path} is not a price table "
            f'({{"models": {{"NAME": {{"input": USD_PER_1M, "output": USD_PER_1M}}}}}}): {exc}'
        ]) from None
