"""Cost from tokens: a price table kept as data, overridable, unknown models cost NULL."""

import json
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.pricing import PriceTable


def test_known_model_and_its_dated_snapshot_cost_the_same():
    table = PriceTable.load()
    assert table.cost("gpt-5.4-mini", 1_000_000, 1_000_000) == pytest.approx(0.75 + 4.50)
    assert table.cost("gpt-5.4-mini-2026-03-17", 1000, 100) == table.cost("gpt-5.4-mini", 1000, 100)


def test_cached_prompt_tokens_use_the_cached_price():
    table = PriceTable.load()
    assert table.cost("gpt-5.4-mini", 1_000_000, 0, cached_tokens=1_000_000) == pytest.approx(0.075)


def test_unknown_model_or_missing_usage_costs_none_not_zero():
    table = PriceTable.load()
    assert table.cost("llama3:8b", 100, 100) is None
    assert table.cost("gpt-5.4-mini", None, 10) is None


def test_a_user_file_overrides_and_extends_the_table(tmp_path: Path):
    override = tmp_path / "prices.json"
    override.write_text(json.dumps({"models": {"llama3:8b": {"input": 0.0, "output": 0.0},
                                               "gpt-5.4-mini": {"input": 1.0, "output": 2.0}}}))
    table = PriceTable.load(override)
    assert table.cost("llama3:8b", 100, 100) == 0.0
    assert table.cost("gpt-5.4-mini", 1_000_000, 1_000_000) == pytest.approx(3.0)


def test_a_broken_price_file_is_a_clear_config_error(tmp_path: Path):
    bad = tmp_path / "prices.json"
    bad.write_text('{"models": {"x": {"input": "cheap"}}}')
    with pytest.raises(ConfigError, match="FLYWHEEL_PRICES"):
        PriceTable.load(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        PriceTable.load(tmp_path / "missing.json")
