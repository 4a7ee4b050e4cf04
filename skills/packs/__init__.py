"""Bundled skill packs (JSON) and the seeded generator that writes them (build_packs.py)."""
