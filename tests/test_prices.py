"""The built-in price table (bot/prices.json) covers what the openai SDK can call.

Every model id in the SDK's `ChatModel` list either has a price, directly or through its
dated-snapshot base, or is listed under `unpriced` with the reason it has none. The table
records the SDK release it was checked against (`checked_against`), and
`tests/data/openai_chat_models.txt` holds that release's model ids: a gap among those fails
whatever SDK is installed. Models that a newer SDK adds (a fresh install may pull one) are
reported as skips naming them, so a user's first `pytest` does not fail for OpenAI's release
calendar, and nothing the table was checked for can slip through as a skip.
"""

import json
import math
import typing
from datetime import date
from pathlib import Path

import openai
import pytest
from openai.types.shared.chat_model import ChatModel

from bot.pricing import BUILTIN, PriceTable

DOC = json.loads(BUILTIN.read_text(encoding="utf-8"))
MODELS: dict[str, dict] = DOC["models"]
UNPRICED: dict[str, str] = DOC.get("unpriced", {})
SDK_MODELS = typing.get_args(ChatModel)

# Models whose real output price is below their input price, with the reason. None are known
# today; a genuine exception goes here rather than loosening the check for every model.
OUTPUT_BELOW_INPUT: dict[str, str] = {}


def _is_price(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def test_the_sdk_list_is_read():
    assert len(SDK_MODELS) > 10 and all(isinstance(m, str) for m in SDK_MODELS)


CHECKED_MODELS = (Path(__file__).parent / "data" / "openai_chat_models.txt").read_text().split()
INSTALLED_IS_CHECKED = DOC["checked_against"] == f"openai {openai.__version__}"


def _check_priced(model: str) -> None:
    price = PriceTable.load().price(model)
    if model in UNPRICED:
        assert isinstance(UNPRICED[model], str) and UNPRICED[model].strip(), f"{model}: unpriced without a reason"
        assert price is None, f"{model} is listed as unpriced but the table prices it"
    else:
        assert price is not None, f"{model} has no price and is not listed under 'unpriced' with a reason"


@pytest.mark.parametrize("model", CHECKED_MODELS)
def test_every_model_of_the_checked_sdk_release_is_priced_or_says_why_not(model):
    _check_priced(model)


def test_the_checked_model_list_is_that_release_s_list():
    assert len(CHECKED_MODELS) > 10 and len(set(CHECKED_MODELS)) == len(CHECKED_MODELS)
    if INSTALLED_IS_CHECKED:
        assert set(CHECKED_MODELS) == set(SDK_MODELS), "tests/data/openai_chat_models.txt is not this SDK's list"


@pytest.mark.parametrize("model", sorted(set(SDK_MODELS) - set(CHECKED_MODELS)))  # none: one skip
def test_models_a_newer_sdk_adds_are_named(model):
    if model not in UNPRICED and PriceTable.load().price(model) is None:
        pytest.skip(f"{model} is new in openai {openai.__version__}; bot/prices.json was checked against "
                    f"{DOC['checked_against']}: add its price (or list it under 'unpriced')")
    _check_priced(model)


def test_unpriced_entries_are_not_also_priced():
    assert not set(UNPRICED) & set(MODELS)


@pytest.mark.parametrize("model", list(MODELS))
def test_every_price_is_a_non_negative_number_with_a_source(model):
    entry = MODELS[model]
    for key in ("input", "output"):
        assert _is_price(entry[key]), f"{model}.{key} = {entry.get(key)!r}"
    if "cached_input" in entry:
        assert _is_price(entry["cached_input"]), f"{model}.cached_input = {entry['cached_input']!r}"
        assert entry["cached_input"] <= entry["input"], f"{model}: cached input costs more than input"
    assert isinstance(entry.get("source"), str) and entry["source"].strip(), f"{model} has no source"


@pytest.mark.parametrize("model", list(MODELS))
def test_output_costs_at_least_input(model):
    entry = MODELS[model]
    if model in OUTPUT_BELOW_INPUT:
        assert entry["output"] < entry["input"], f"{model} is flagged as an exception but is not one any more"
    else:
        assert entry["output"] >= entry["input"], f"{model}: output {entry['output']} < input {entry['input']}"


def test_as_of_is_a_date():
    assert isinstance(DOC["as_of"], str)
    date.fromisoformat(DOC["as_of"])


def test_the_table_keeps_its_shape():
    assert {"unit", "as_of", "source", "note", "models"} <= set(DOC)
    assert DOC["unit"] == "USD per 1M tokens"


def test_a_snapshot_with_its_own_price_is_not_priced_as_its_base():
    table = PriceTable.load()
    assert table.price("gpt-4o-2024-05-13").input != table.price("gpt-4o").input
    assert table.price("gpt-4o-2024-08-06") == table.price("gpt-4o")
    assert table.price("gpt-3.5-turbo-0613").input != table.price("gpt-3.5-turbo").input
    assert table.price("gpt-3.5-turbo-16k").input != table.price("gpt-3.5-turbo").input
