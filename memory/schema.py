"""The schema of memory.db as an ordered list of migrations (sqlite-utils `Migrations`).

Never edit an applied migration: add a new one below it.
"""

from __future__ import annotations

from sqlite_utils import Migrations

migrations = Migrations("sdft_agent")


@migrations()
def m001_model_store(db):
    db.execute(
        """
        CREATE TABLE model_versions (
            version TEXT PRIMARY KEY,          -- 'smollm2-135m' for a base, 'v0001'… for learned
            kind TEXT NOT NULL,                -- base | learned | imported
            parent TEXT REFERENCES model_versions(version),
            path TEXT NOT NULL,                -- relative to <home>
            learn_run_id INTEGER,
            sha256 TEXT NOT NULL,              -- of the manifest's weights file
            size_bytes INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            notes TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE aliases (
            name TEXT PRIMARY KEY,             -- 'champion'
            version TEXT NOT NULL REFERENCES model_versions(version),
            updated_at TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE alias_history (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            previous TEXT,
            reason TEXT,
            reverted INTEGER NOT NULL DEFAULT 0,
            at TEXT NOT NULL
        )
        """
    )
