"""Generate the bundled skill packs from templates and value lists, deterministically.

Run `python -m skills.packs.build_packs` to rewrite skills/packs/*.json; running it again
reproduces the files byte for byte (a test checks this). Every call is executed with the tool's
implementation while generating, so no pack ships a call that fails.

Users ask in varied ways (terse, polite, typos, information in different orders, units spelled
out or abbreviated); the schemas use enums and fixed formats so the right arguments are canonical.
Demonstrations and eval cases come from the same templates with different values, and no user
text appears in both.
"""

from __future__ import annotations

import datetime as dt
import random
import sys
from collections.abc import Callable
from pathlib import Path

from skills.pack import SkillPack
from skills.tools import catalog, date_math, unit_convert

SEED = 20260601
HERE = Path(__file__).resolve().parent

Sample = tuple[str, dict, dict]  # user text, exact call arguments, expected (acceptable values)


def _exact(args: dict) -> dict:
    return {k: [v] for k, v in args.items()}


def _num(rng: random.Random, lo: float, hi: float) -> float | int:
    """A number the way people type one: mostly whole, sometimes one decimal."""
    if rng.random() < 0.6:
        return rng.randint(int(lo), int(hi))
    return round(rng.uniform(lo, hi), 1)


# ---------------------------------------------------------------- unit_convert

UNIT_FORMS = {
    "millimeter": ["mm", "millimeters", "millimetres", "milimeters"],
    "centimeter": ["cm", "centimeters", "centimetres", "cms"],
    "meter": ["m", "meters", "metres", "meter"],
    "kilometer": ["km", "kilometers", "kilometres", "kms", "kilometrs"],
    "inch": ["in", "inches", "inch"],
    "foot": ["ft", "feet", "foot"],
    "yard": ["yd", "yards", "yds"],
    "mile": ["mi", "miles", "mile"],
    "gram": ["g", "grams", "gr", "gramms"],
    "kilogram": ["kg", "kilograms", "kilos", "kgs"],
    "ounce": ["oz", "ounces"],
    "pound": ["lb", "lbs", "pounds"],
    "celsius": ["°C", "degrees Celsius", "C", "celsius", "celcius", "centigrade"],
    "fahrenheit": ["°F", "degrees Fahrenheit", "F", "fahrenheit", "farenheit"],
    "kelvin": ["K", "kelvin", "kelvins"],
    "milliliter": ["ml", "milliliters", "millilitres", "mL"],
    "liter": ["l", "liters", "litres", "L", "ltr"],
    "cup": ["cups", "US cups"],
    "gallon": ["gal", "gallons", "US gallons"],
}
RANGES = {"length": (1, 500), "mass": (1, 250), "temperature": (-40, 120), "volume": (1, 40)}
KELVIN_RANGE = (200, 400)  # no negative kelvins
UNIT_TEMPLATES = [
    "convert {v} {f} to {t}",
    "{v} {f} in {t}?",
    "how many {t} is {v} {f}",
    "Could you please convert {v} {f} into {t}?",
    "what's {v} {f} in {t}",
    "I need {v} {f} expressed in {t}, thanks",
    "pls convrt {v} {f} to {t}",
    "How much is {v} {f} in {t}?",
    "To {t}: {v} {f}",
    "{t} please, from {v} {f}",
    "{v} {f} = ? {t}",
    "Hi! Quick question: what is {v} {f} when converted to {t}?",
]
KIND_TEMPLATES = {
    "length": ["I ran {v} {f} today, how far is that in {t}?", "the board is {v} {f} long. in {t}?"],
    "mass": ["my suitcase weighs {v} {f}; what's that in {t}?", "recipe calls for {v} {f} of flour, how many {t}?"],
    "temperature": ["it's {v} {f} outside, what is that in {t}?", "oven at {v} {f}, whats that in {t}"],
    "volume": ["the tank holds {v} {f}, how many {t} is that", "I drank {v} {f} of water - in {t} please"],
}
UNIT_TOOL = {
    "name": "convert_units",
    "description": "Convert a quantity between units of the same kind (length, mass, temperature, volume).",
    "parameters": {
        "type": "object",
        "properties": {
            "value": {"type": "number", "description": "Amount to convert"},
            "from_unit": {"type": "string", "enum": list(unit_convert.UNITS)},
            "to_unit": {"type": "string", "enum": list(unit_convert.UNITS)},
        },
        "required": ["value", "from_unit", "to_unit"],
    },
}


def _unit_sample(rng: random.Random) -> Sample:
    kind = rng.choice(list(RANGES))
    units = [u for u, (k, _) in unit_convert.UNITS.items() if k == kind]
    src, dst = rng.sample(units, 2)
    value = _num(rng, *(KELVIN_RANGE if src == "kelvin" else RANGES[kind]))
    template = rng.choice(UNIT_TEMPLATES + KIND_TEMPLATES[kind])
    text = template.format(v=value, f=rng.choice(UNIT_FORMS[src]), t=rng.choice(UNIT_FORMS[dst]))
    args = {"value": value, "from_unit": src, "to_unit": dst}
    return text, args, _exact(args)


# ---------------------------------------------------------------- date_math

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
MONTH_TYPOS = {"February": "Febuary", "August": "Agust", "September": "Setpember", "January": "Janaury"}


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _date_text(rng: random.Random, d: dt.date) -> str:
    month = MONTHS[d.month - 1]
    if month in MONTH_TYPOS and rng.random() < 0.25:
        month = MONTH_TYPOS[month]
    forms = [
        d.isoformat(),
        f"{month} {d.day}, {d.year}",
        f"{d.day} {month} {d.year}",
        f"{month[:3]} {d.day} {d.year}",
        f"{month} {_ordinal(d.day)} {d.year}",
        f"the {_ordinal(d.day)} of {month} {d.year}",
        f"{d.year}/{d.month:02d}/{d.day:02d}",
        f"{d.day} {month[:3].lower()} {d.year}",
    ]
    return rng.choice(forms)


def _rand_date(rng: random.Random) -> dt.date:
    return dt.date(2020, 1, 1) + dt.timedelta(days=rng.randint(0, 4017))


ADD_TEMPLATES = [  # ({n} days, {d} date, sign of the day count)
    ("what date is {n} days after {d}?", 1),
    ("{n} days after {d}", 1),
    ("add {n} days to {d}", 1),
    ("Could you tell me the date {n} days from {d}, please?", 1),
    ("{d} plus {n} days = ?", 1),
    ("if I start on {d}, what's the date {n} days later", 1),
    ("{n} days before {d}?", -1),
    ("subtract {n} days from {d}", -1),
    ("go back {n} days from {d} pls", -1),
    ("what was the date {n} days prior to {d}", -1),
    ("deadline is {n} days after {d} - which date is that?", 1),
    ("wat date is it {n} days after {d}", 1),
]
WEEK_TEMPLATES = [
    ("what's the date {w} weeks after {d}?", 1),
    ("{w} weeks before {d}", -1),
    ("add {w} weeks to {d}", 1),
]
BETWEEN_TEMPLATES = [  # {a} start, {b} end
    "how many days between {a} and {b}?",
    "days from {a} to {b}",
    "count the days from {a} until {b}",
    "{a} to {b}: how many days?",
    "Number of days between {a} and {b}, please.",
    "how long is it from {a} to {b} in days",
    "If today is {a}, how many days until {b}?",
    "how many days are there from {a} thru {b}",
    "Could you work out the number of days from {a} to {b}?",
    "dayz between {a} and {b}",
]
WEEKDAY_TEMPLATES = [
    "what day of the week is {d}?",
    "which weekday was {d}",
    "{d} - what day is that?",
    "day of week for {d} pls",
    "wat day is {d}",
    "Could you tell me what weekday {d} falls on?",
    "I was born on {d}. What day of the week was it?",
    "Is {d} a Monday or what?",
    "weekday of {d}",
    "Hello, which day of the week will {d} be?",
]
DATE_PARAM = {"type": "string", "description": "YYYY-MM-DD"}  # no "pattern": ~15 tokens per use
DATE_TOOLS = [
    {
        "name": "add_days",
        "description": "The date a number of days after a date (negative days go back).",
        "parameters": {
            "type": "object",
            "properties": {"date": DATE_PARAM, "days": {"type": "integer"}},
            "required": ["date", "days"],
        },
    },
    {
        "name": "days_between",
        "description": "Number of days from start to end.",
        "parameters": {
            "type": "object",
            "properties": {"start": DATE_PARAM, "end": DATE_PARAM},
            "required": ["start", "end"],
        },
    },
    {
        "name": "weekday_of",
        "description": "The day of the week of a date.",
        "parameters": {"type": "object", "properties": {"date": DATE_PARAM}, "required": ["date"]},
    },
]


def _add_days_sample(rng: random.Random) -> Sample:
    d = _rand_date(rng)
    if rng.random() < 0.2:
        template, sign = rng.choice(WEEK_TEMPLATES)
        w = rng.randint(1, 12)
        text, days = template.format(w=w, d=_date_text(rng, d)), sign * 7 * w
    else:
        template, sign = rng.choice(ADD_TEMPLATES)
        n = rng.randint(1, 400)
        text, days = template.format(n=n, d=_date_text(rng, d)), sign * n
    args = {"date": d.isoformat(), "days": days}
    return text, args, _exact(args)


def _days_between_sample(rng: random.Random) -> Sample:
    a = _rand_date(rng)
    b = a + dt.timedelta(days=rng.randint(1, 900))
    text = rng.choice(BETWEEN_TEMPLATES).format(a=_date_text(rng, a), b=_date_text(rng, b))
    args = {"start": a.isoformat(), "end": b.isoformat()}
    return text, args, _exact(args)


def _weekday_sample(rng: random.Random) -> Sample:
    d = _rand_date(rng)
    args = {"date": d.isoformat()}
    return rng.choice(WEEKDAY_TEMPLATES).format(d=_date_text(rng, d)), args, _exact(args)


# ---------------------------------------------------------------- catalog

CATEGORY_FORMS = {
    "laptop": ["laptops", "laptop", "notebooks", "notebook computers", "lapotps"],
    "phone": ["phones", "smartphones", "mobile phones", "cell phones", "phone"],
    "headphones": ["headphones", "earbuds", "headphone", "headphnes"],
    "camera": ["cameras", "camera", "cams"],
    "monitor": ["monitors", "screens", "displays", "monitor"],
}
PRICES = [50, 100, 150, 200, 250, 300, 400, 500, 600, 750, 800, 1000, 1200, 1500, 2000]
SEARCH_PLAIN = [
    "show me {c}",
    "what {c} do you sell?",
    "do u have any {c}",
    "Could you list your {c}, please?",
    "{c}",
    "I'm shopping for {c}. What are the options?",
]
SEARCH_PRICE = [
    "any {c} under ${p}?",
    "{c} below {p} dollars",
    "I'm looking for {c}, budget {p} USD",
    "Could you find me some {c} for at most ${p}?",
    "cheap {c} max {p}",
    "budget is ${p}, what {c} can I get?",
    "{c} up to {p}$ pls",
]
SEARCH_STOCK = [
    "what {c} do you have in stock?",
    "{c} available right now?",
    "Which {c} can I buy today (in stock only)?",
]
SEARCH_BOTH = [
    "in-stock {c} under ${p}",
    "list {c} that cost at most ${p} and are available now",
    "need {c} I can get today, no more than {p} dollars",
    "under ${p} and in stock: {c}",
]
SKU_TEMPLATES = [
    "details for {s}",
    "tell me about product {s}",
    "what is {s}?",
    "sku {s} info pls",
    "How much does item {s} cost?",
    "Is {s} in stock?",
    "I'd like the details of {s}, please.",
    "{s}?",
    "look up {s}",
    "Can you pull up the product with SKU {s}?",
]
CATALOG_TOOLS = [
    {
        "name": "search_products",
        "description": "Search the catalogue by category, optionally by max price or in-stock only.",
        "parameters": {
            "type": "object",
            "properties": {
                "category": {"type": "string", "enum": list(catalog.CATEGORIES)},
                "max_price": {"type": "number", "description": "USD, inclusive"},
                "in_stock": {"type": "boolean", "description": "Only items in stock"},
            },
            "required": ["category"],
        },
    },
    {
        "name": "get_product",
        "description": "Details of one product by SKU.",
        "parameters": {
            "type": "object",
            "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$", "description": "e.g. LP-101"}},
            "required": ["sku"],
        },
    },
]


def _search_sample(rng: random.Random) -> Sample:
    category = rng.choice(catalog.CATEGORIES)
    p = rng.choice(PRICES)
    kind = rng.choice(["plain", "price", "price", "stock", "both"])
    templates = {"plain": SEARCH_PLAIN, "price": SEARCH_PRICE, "stock": SEARCH_STOCK, "both": SEARCH_BOTH}
    text = rng.choice(templates[kind]).format(c=rng.choice(CATEGORY_FORMS[category]), p=p)
    args: dict = {"category": category}
    if kind in ("price", "both"):
        args["max_price"] = p
    if kind in ("stock", "both"):
        args["in_stock"] = True
    expected = _exact(args)
    if "in_stock" not in args:
        expected["in_stock"] = ["", False]  # no stock filter asked: leaving it out or false both mean that
    return text, args, expected


def _sku_sample(rng: random.Random) -> Sample:
    sku = rng.choice(catalog.PRODUCTS)[0]
    shown = rng.choice([sku, sku, sku.lower(), sku.replace("-", "")])
    args = {"sku": sku}
    return rng.choice(SKU_TEMPLATES).format(s=shown), args, _exact(args)


# ---------------------------------------------------------------- assembly

Spec = tuple[str, Callable[[random.Random], Sample], int, int]  # tool, sampler, n demos, n eval


def _useful(name: str, args: dict, impl: dict) -> bool:
    """Run the call; a search that finds nothing teaches little, so such samples are redrawn."""
    result = impl[name](**args)
    return not (name == "search_products" and not result["products"])


def build_pack(name: str, description: str, tools: list[dict], specs: list[Spec], impl: dict) -> SkillPack:
    rng = random.Random(f"{SEED}:{name}")
    seen: set[str] = set()
    demos: list[dict] = []
    cases: list[dict] = []
    for tool, sampler, n_demo, n_eval in specs:
        drawn: list[Sample] = []
        for _ in range(10_000):
            if len(drawn) == n_demo + n_eval:
                break
            text, args, expected = sampler(rng)
            key = " ".join(text.split()).casefold()
            if key in seen or not _useful(tool, args, impl):
                continue
            seen.add(key)
            drawn.append((text, args, expected))
        else:
            raise RuntimeError(f"{name}/{tool}: could not draw {n_demo + n_eval} distinct samples")
        for text, args, _expected in drawn[:n_demo]:
            demos.append({"messages": [{"role": "user", "content": text}],
                          "tool_calls": [{"name": tool, "arguments": args}]})
        for text, _args, expected in drawn[n_demo:]:
            cases.append({"messages": [{"role": "user", "content": text}],
                          "expected": [{"name": tool, "arguments": expected}]})
    rng.shuffle(demos)
    rng.shuffle(cases)
    pack = SkillPack(name, description, tools, demos, cases)
    pack.validate()
    return pack


def build_all() -> list[SkillPack]:
    return [
        build_pack(
            "unit_convert",
            "Convert lengths, masses, temperatures and volumes between units.",
            [UNIT_TOOL],
            [("convert_units", _unit_sample, 40, 40)],
            unit_convert.TOOLS,
        ),
        build_pack(
            "date_math",
            "Calendar arithmetic: add days to a date, days between dates, weekday of a date.",
            DATE_TOOLS,
            [("add_days", _add_days_sample, 14, 12),
             ("days_between", _days_between_sample, 13, 12),
             ("weekday_of", _weekday_sample, 13, 12)],
            date_math.TOOLS,
        ),
        build_pack(
            "catalog",
            "Search a product catalogue and look up products by SKU.",
            CATALOG_TOOLS,
            [("search_products", _search_sample, 24, 22), ("get_product", _sku_sample, 16, 14)],
            catalog.TOOLS,
        ),
    ]


def main(out_dir: Path = HERE) -> None:
    for pack in build_all():
        path = pack.save(out_dir / f"{pack.name}.json")
        print(f"{path}: {len(pack.demonstrations)} demonstrations, {len(pack.eval)} eval cases")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
