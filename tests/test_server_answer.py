"""The answer step after a tool result (agent.answer), on the bundled tools' real outputs: what a
small model writes there (echoes, markup, ungrounded chatter) never reaches the user."""

from __future__ import annotations

import json

import pytest

from agent.answer import answer_after_tools, grounded_answer, is_grounded, is_prose, key_values
from skills.tools.catalog import get_product, search_products
from skills.tools.date_math import days_between, weekday_of
from skills.tools.unit_convert import convert_units


def result(name, fn, **args):
    return {"name": name, "arguments": args, "content": json.dumps(fn(**args))}


CONVERT = result("convert_units", convert_units, value=5, from_unit="mile", to_unit="kilometer")
PRODUCT = result("get_product", get_product, sku="LP-103")
SEARCH = result("search_products", search_products, category="phone", max_price=700)
WEEKDAY = result("weekday_of", weekday_of, date="2024-07-04")
DAYS = result("days_between", days_between, start="2024-01-01", end="2024-03-01")


@pytest.mark.parametrize("reply", [
    '<tool_response>\n{"value": 8.04672, "unit": "kilometer"}}',  # the echo seen in issue 13
    '{"value": 8.04672, "unit": "kilometer"}',
    "8.04672",
    "Sure! Let me know if you need anything else.",  # prose without the result
    "5 miles is 8 kilometers.",  # rounded past what the result says
    "<|im_start|>assistant\n5 miles is 8.05 km",
    'Use this:\n```python\nprint(f"{8.04672} kilometer")\n```',  # seen from SmolLM2 in the benchmark
    "",
])
def test_unusable_replies_are_replaced_by_a_grounded_sentence(reply):
    answer = answer_after_tools(reply, [CONVERT])
    assert answer.source == "grounded"
    assert answer.text == ("Result of convert units (value 5, from unit mile, to unit kilometer): "
                           "value 8.04672, unit kilometer.")
    assert is_prose(answer.text) and is_grounded(answer.text, CONVERT["content"])


@pytest.mark.parametrize(("reply", "res"), [
    ("5 miles is 8.05 kilometers.", CONVERT),
    ("That is about 8.0467 kilometer.", CONVERT),
    ("The Budget Book 14 (LP-103) is a laptop for $449 and is not in stock.", PRODUCT),
    ("July 4, 2024 was a Thursday.", WEEKDAY),
    ("There are 60 days between them.", DAYS),
])
def test_grounded_prose_from_the_model_is_kept(reply, res):
    assert answer_after_tools(reply, [res]).text == reply
    assert answer_after_tools(reply, [res]).source == "model"


def test_key_values_of_records_and_text():
    assert key_values(SEARCH["content"]) == ["PH-203", "PH-202", "PH-201"]
    assert key_values(PRODUCT["content"])[:4] == ["LP-103", "Budget Book 14", "laptop", 449.0]
    assert key_values("Sunny and 21 C in Paris") == [21.0]
    assert key_values("Sunny in Paris") == ["Sunny in Paris"]
    assert not is_grounded("The Budget Book 14 (LP-103) is a laptop for $449 and in stock.", PRODUCT["content"])


def test_grounded_answers_of_every_shape_are_prose_with_every_value():
    for res in (CONVERT, PRODUCT, SEARCH, WEEKDAY, DAYS):
        text = grounded_answer([res])
        assert is_prose(text) and is_grounded(text, res["content"]), text
        assert "<" not in text and "{" not in text
    empty = {"name": "search_products", "arguments": {"category": "camera", "max_price": 1},
             "content": json.dumps(search_products("camera", 1))}
    assert grounded_answer([empty]) == "Result of search products (category camera, max price 1): products none found."
    error = {"name": "get_product", "arguments": {"sku": "XX"}, "status": "error",
             "content": "Error: no product with SKU 'XX' <|im_end|>"}
    assert answer_after_tools("", [error]).text == "Get product (sku XX) failed: Error: no product with SKU 'XX'."
    two = answer_after_tools("", [WEEKDAY, DAYS]).text
    assert "Thursday" in two and "60" in two


def test_no_tool_result_leaves_the_reply_alone():
    assert answer_after_tools("  hello  ", []).text == "hello"
