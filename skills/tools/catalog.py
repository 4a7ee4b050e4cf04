"""catalog: a small fixed product catalogue to search by category and price, and look up by SKU."""

from __future__ import annotations

# sku, name, category, price (USD), in stock
PRODUCTS: list[tuple[str, str, str, float, bool]] = [
    ("LP-101", "Aero 13 laptop", "laptop", 899.0, True),
    ("LP-102", "Aero 15 Pro laptop", "laptop", 1399.0, True),
    ("LP-103", "Budget Book 14", "laptop", 449.0, False),
    ("LP-104", "Studio 16 Max", "laptop", 2199.0, True),
    ("PH-201", "Pixelon 8", "phone", 699.0, True),
    ("PH-202", "Pixelon 8 Mini", "phone", 499.0, True),
    ("PH-203", "Nova S2", "phone", 299.0, False),
    ("PH-204", "Nova S2 Ultra", "phone", 1099.0, True),
    ("HP-301", "Quiet Comfort Buds", "headphones", 149.0, True),
    ("HP-302", "Studio Over-Ear", "headphones", 349.0, True),
    ("HP-303", "Sport Wired Earphones", "headphones", 29.0, True),
    ("HP-304", "Basic On-Ear", "headphones", 59.0, False),
    ("CM-401", "Snap Mirrorless X", "camera", 1249.0, True),
    ("CM-402", "Action Cam 4K", "camera", 249.0, True),
    ("CM-403", "Instant Film Mini", "camera", 89.0, False),
    ("MN-501", "View 24 FHD", "monitor", 179.0, True),
    ("MN-502", "View 27 QHD", "monitor", 329.0, True),
    ("MN-503", "Ultra 34 Curved", "monitor", 649.0, False),
]
CATEGORIES = ("laptop", "phone", "headphones", "camera", "monitor")


def _record(row: tuple) -> dict:
    sku, name, category, price, in_stock = row
    return {"sku": sku, "name": name, "category": category, "price": price, "in_stock": in_stock}


def search_products(category: str, max_price: float | None = None, in_stock: bool | None = None) -> dict:
    """Products of a category, cheapest first, optionally under a price or only in stock."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r} (known: {', '.join(CATEGORIES)})")
    rows = [
        _record(r)
        for r in sorted(PRODUCTS, key=lambda r: (r[3], r[0]))
        if r[2] == category
        and (max_price is None or r[3] <= max_price)
        and (not in_stock or r[4])
    ]
    return {"products": rows}


def get_product(sku: str) -> dict:
    """Details of one product by SKU (case and a missing dash are forgiven)."""
    key = sku.strip().upper().replace(" ", "")
    if len(key) == 5 and "-" not in key:
        key = f"{key[:2]}-{key[2:]}"
    for row in PRODUCTS:
        if row[0] == key:
            return _record(row)
    raise ValueError(f"no product with SKU {sku!r}")


TOOLS = {"search_products": search_products, "get_product": get_product}
