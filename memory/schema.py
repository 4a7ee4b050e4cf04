"""The schema of memory.db as an ordered list of migrations (sqlite-utils `Migrations`).

Never edit an applied migration: add a new one below it.
"""

from __future__ import annotations

import json

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


@migrations()
def m002_episodic(db):
    """Skills and their tools, episodes, demonstrations (+ which runs used them), eval cases,
    learning runs and gate reports. JSON columns hold compact JSON text, key order kept."""
    db.execute(
        """
        CREATE TABLE skills (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            description TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE tools (
            id INTEGER PRIMARY KEY,
            skill_id INTEGER NOT NULL REFERENCES skills(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            parameters TEXT NOT NULL,          -- JSON Schema object (OpenAI function format)
            position INTEGER NOT NULL,         -- order in the skill pack
            UNIQUE (skill_id, name)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE episodes (
            id INTEGER PRIMARY KEY,
            skill_id INTEGER REFERENCES skills(id),
            messages TEXT NOT NULL,            -- the conversation, JSON
            tool_calls TEXT NOT NULL DEFAULT '[]',
            answer TEXT,
            outcome TEXT NOT NULL DEFAULT 'unknown' CHECK (outcome IN ('success', 'failure', 'unknown')),
            note TEXT,
            source TEXT NOT NULL CHECK (source IN ('live', 'taught', 'imported')),
            model_version TEXT,                -- no FK: episodes outlive pruned versions
            meta TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX episodes_outcome ON episodes(outcome)")
    db.execute(
        """
        CREATE TABLE demonstrations (
            id INTEGER PRIMARY KEY,
            skill_id INTEGER NOT NULL REFERENCES skills(id),
            messages TEXT NOT NULL,            -- prefix up to the assistant turn to learn
            tool_calls TEXT NOT NULL,          -- that turn's calls [{name, arguments}]
            content TEXT,                      -- that turn's text
            source TEXT NOT NULL CHECK (source IN ('live', 'taught', 'imported')),
            episode_id INTEGER REFERENCES episodes(id) ON DELETE SET NULL,
            provenance TEXT NOT NULL DEFAULT '{}',
            fingerprint TEXT NOT NULL,         -- sha256 of (messages, tool_calls, content)
            duplicates INTEGER NOT NULL DEFAULT 0,
            prompt_text TEXT NOT NULL,         -- what recall matches: the user turns
            calls_text TEXT NOT NULL,          -- and the calls (tool names, string arguments)
            -- one token per skill, so recall within a skill is an FTS5 AND, not a scan + filter
            skill_key TEXT GENERATED ALWAYS AS ('skill' || skill_id) VIRTUAL,
            created_at TEXT NOT NULL,
            UNIQUE (skill_id, fingerprint)
        )
        """
    )
    db.execute("CREATE INDEX demonstrations_episode ON demonstrations(episode_id)")
    db["demonstrations"].enable_fts(
        ["prompt_text", "calls_text", "skill_key"],
        create_triggers=True,
        tokenize="porter unicode61 remove_diacritics 2",
    )
    db.execute(
        """
        CREATE TABLE learn_runs (
            id INTEGER PRIMARY KEY,
            method TEXT NOT NULL,              -- sdft | sft | ...
            skill TEXT,                        -- name; NULL = every skill with new demonstrations
            status TEXT NOT NULL,
            phase TEXT,
            phases TEXT NOT NULL DEFAULT '[]', -- [{phase, at}] in order
            config TEXT NOT NULL DEFAULT '{}',
            metrics TEXT NOT NULL DEFAULT '{}',
            base_version TEXT,
            candidate_version TEXT,
            error TEXT,
            started_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            finished_at TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE demonstration_uses (
            demonstration_id INTEGER NOT NULL REFERENCES demonstrations(id) ON DELETE CASCADE,
            run_id INTEGER NOT NULL REFERENCES learn_runs(id) ON DELETE CASCADE,
            at TEXT NOT NULL,
            PRIMARY KEY (demonstration_id, run_id)
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE INDEX demonstration_uses_run ON demonstration_uses(run_id)")
    db.execute(
        """
        CREATE TABLE eval_cases (
            id INTEGER PRIMARY KEY,
            skill_id INTEGER NOT NULL REFERENCES skills(id),
            messages TEXT NOT NULL,
            expected TEXT NOT NULL,            -- BFCL possible answers
            fingerprint TEXT NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (skill_id, fingerprint)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE gate_reports (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES learn_runs(id),
            decision TEXT NOT NULL,
            summary TEXT NOT NULL,
            path TEXT,                         -- relative to <home>, or absolute
            created_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX gate_reports_run ON gate_reports(run_id)")


@migrations()
def m003_learn_lease(db):
    """One learning run at a time across processes (memory.lease)."""
    db.execute(
        """
        CREATE TABLE leases (
            name TEXT PRIMARY KEY,             -- 'learn'
            holder TEXT NOT NULL,              -- host:pid:nonce of the taker; '' = free
            pid INTEGER NOT NULL,
            host TEXT NOT NULL,
            run_id INTEGER,
            acquired_at REAL NOT NULL,         -- unix seconds
            expires_at REAL NOT NULL           -- renewed by the holder's heartbeat
        )
        """
    )


@migrations()
def m004_learned_turn_and_run_demonstrations(db):
    """Episodes name the assistant turn a demonstration of them learns (memory.records.Episode);
    a learning run records the demonstrations it was handed. Older episodes get the turn the
    default rule names."""
    db.execute("ALTER TABLE episodes ADD COLUMN learned_turn INTEGER")
    db.execute("ALTER TABLE learn_runs ADD COLUMN demonstration_ids TEXT NOT NULL DEFAULT '[]'")
    from memory.records import default_learned_turn

    for eid, messages in db.execute("SELECT id, messages FROM episodes").fetchall():
        turn = default_learned_turn(json.loads(messages))
        if turn is not None:
            db.execute("UPDATE episodes SET learned_turn = ? WHERE id = ?", [turn, eid])
