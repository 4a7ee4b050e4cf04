"""unit_convert: length, mass, temperature and volume conversion between canonical units."""

from __future__ import annotations

# unit -> (kind, factor to the kind's base unit); temperature is affine, handled apart.
UNITS: dict[str, tuple[str, float]] = {
    "millimeter": ("length", 0.001),
    "centimeter": ("length", 0.01),
    "meter": ("length", 1.0),
    "kilometer": ("length", 1000.0),
    "inch": ("length", 0.0254),
    "foot": ("length", 0.3048),
    "yard": ("length", 0.9144),
    "mile": ("length", 1609.344),
    "gram": ("mass", 1.0),
    "kilogram": ("mass", 1000.0),
    "ounce": ("mass", 28.349523125),
    "pound": ("mass", 453.59237),
    "celsius": ("temperature", 1.0),
    "fahrenheit": ("temperature", 1.0),
    "kelvin": ("temperature", 1.0),
    "milliliter": ("volume", 0.001),
    "liter": ("volume", 1.0),
    "cup": ("volume", 0.2365882365),
    "gallon": ("volume", 3.785411784),
}


def _to_celsius(value: float, unit: str) -> float:
    if unit == "fahrenheit":
        return (value - 32.0) * 5.0 / 9.0
    if unit == "kelvin":
        return value - 273.15
    return value


def _from_celsius(value: float, unit: str) -> float:
    if unit == "fahrenheit":
        return value * 9.0 / 5.0 + 32.0
    if unit == "kelvin":
        return value + 273.15
    return value


def convert_units(value: float, from_unit: str, to_unit: str) -> dict:
    """Convert `value` from one unit to another of the same kind (US cup and gallon)."""
    for unit in (from_unit, to_unit):
        if unit not in UNITS:
            raise ValueError(f"unknown unit {unit!r} (known: {', '.join(UNITS)})")
    kind, to_kind = UNITS[from_unit][0], UNITS[to_unit][0]
    if kind != to_kind:
        raise ValueError(f"cannot convert {kind} ({from_unit}) to {to_kind} ({to_unit})")
    if kind == "temperature":
        result = _from_celsius(_to_celsius(value, from_unit), to_unit)
    else:
        result = value * UNITS[from_unit][1] / UNITS[to_unit][1]
    return {"value": round(result, 6), "unit": to_unit}


TOOLS = {"convert_units": convert_units}
