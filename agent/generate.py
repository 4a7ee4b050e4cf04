"""Kept for old imports: generation now lives in agent.decode, the one decoding path
(`complete` for requests, `generate_ids` / `generate_reply` for one prompt)."""

from agent.decode import generate_ids, generate_reply

__all__ = ["generate_ids", "generate_reply"]
