"""The database schema, as a list of migrations (``PRAGMA user_version`` counts the applied ones).

Append a migration; never edit a released one: a database written by an older syncd must open
and sync without re-sending anything.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

MIGRATIONS: list[str] = [
    # 1: the sync engine
    """
    CREATE TABLE users (                -- what Chengjiyun has acknowledged: the snapshot
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        record TEXT NOT NULL,           -- User.to_json()
        hash TEXT NOT NULL,             -- User.content_hash()
        missing_cycles INTEGER NOT NULL DEFAULT 0,  -- consecutive complete polls it was absent from
        acked_at REAL NOT NULL
    );
    CREATE INDEX users_source ON users(source);
    CREATE TABLE desired_users (        -- the desired state computed by the last cycle of each source
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        record TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX desired_users_source ON desired_users(source);
    CREATE TABLE class_statuses (       -- served by queryClassStatus
        key TEXT PRIMARY KEY,
        record TEXT NOT NULL,           -- ClassStatus.to_json()
        hash TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('addUser', 'updateUser', 'classStatus', 'deleteUser')),
        record_id TEXT,                 -- user id; NULL for the classStatus notify
        payload TEXT NOT NULL,          -- JSON element sent in the request array
        record TEXT,                    -- full User.to_json() to store on acknowledgement
        hash TEXT,
        source TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX outbox_one_per_record ON outbox(record_id) WHERE record_id IS NOT NULL;
    CREATE UNIQUE INDEX outbox_one_notify ON outbox(kind) WHERE kind = 'classStatus';
    CREATE TABLE dead_letters (
        seq INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        record_id TEXT,
        payload TEXT NOT NULL,
        record TEXT,
        hash TEXT,
        source TEXT,
        attempts INTEGER NOT NULL,
        code INTEGER,
        reason TEXT NOT NULL,
        failed_at REAL NOT NULL
    );
    CREATE TABLE held_deletions (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        name TEXT NOT NULL,
        reason TEXT NOT NULL,
        held_at REAL NOT NULL,
        approved INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE cycles (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        command TEXT NOT NULL,          -- run-once / run / plan
        started_at REAL NOT NULL,
        finished_at REAL,
        outcome TEXT,                   -- ok / partial / failed
        sources TEXT NOT NULL DEFAULT '{}',   -- {source: {outcome, error, polled, ...}}
        counts TEXT NOT NULL DEFAULT '{}'     -- {adds, updates, deletes, held, sent, dead}
    );
    CREATE TABLE source_state (
        source TEXT PRIMARY KEY,
        state TEXT NOT NULL DEFAULT 'ok',      -- ok / failing
        consecutive_failures INTEGER NOT NULL DEFAULT 0,
        last_attempt_at REAL,
        last_success_at REAL,
        last_error TEXT
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: imported exams (issue 5)
    """
    CREATE TABLE exams (
        exam_id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        grade INTEGER,
        year INTEGER,
        imported_at REAL NOT NULL
    );
    CREATE TABLE exam_totals (
        exam_id TEXT NOT NULL REFERENCES exams(exam_id) ON DELETE CASCADE,
        account TEXT NOT NULL,
        scores TEXT NOT NULL,           -- {"语文": 120, ...}
        PRIMARY KEY (exam_id, account)
    );
    CREATE TABLE exam_questions (
        exam_id TEXT NOT NULL REFERENCES exams(exam_id) ON DELETE CASCADE,
        course TEXT NOT NULL,
        position INTEGER NOT NULL,
        number TEXT NOT NULL,
        subjective TEXT NOT NULL,
        score REAL NOT NULL,
        scroll TEXT NOT NULL,
        selection TEXT,
        type TEXT,
        knowledge TEXT,
        ability TEXT,
        PRIMARY KEY (exam_id, course, number)
    );
    CREATE TABLE exam_question_scores (
        exam_id TEXT NOT NULL REFERENCES exams(exam_id) ON DELETE CASCADE,
        course TEXT NOT NULL,
        account TEXT NOT NULL,
        scores TEXT NOT NULL,           -- {"1": 5, "3.a": null}
        PRIMARY KEY (exam_id, course, account)
    );
    """,
    # 3: a counter that moves whenever what the pull API serves changes, in any process, so
    # answers can be built once per change and served from memory.
    """
    INSERT OR IGNORE INTO meta (key, value) VALUES ('snapshot_generation', '0');
    CREATE TRIGGER users_added AFTER INSERT ON users BEGIN
        UPDATE meta SET value = value + 1 WHERE key = 'snapshot_generation'; END;
    CREATE TRIGGER users_changed AFTER UPDATE OF record ON users BEGIN
        UPDATE meta SET value = value + 1 WHERE key = 'snapshot_generation'; END;
    CREATE TRIGGER users_removed AFTER DELETE ON users BEGIN
        UPDATE meta SET value = value + 1 WHERE key = 'snapshot_generation'; END;
    CREATE TRIGGER class_statuses_added AFTER INSERT ON class_statuses BEGIN
        UPDATE meta SET value = value + 1 WHERE key = 'snapshot_generation'; END;
    CREATE TRIGGER class_statuses_changed AFTER UPDATE ON class_statuses BEGIN
        UPDATE meta SET value = value + 1 WHERE key = 'snapshot_generation'; END;
    CREATE TRIGGER class_statuses_removed AFTER DELETE ON class_statuses BEGIN
        UPDATE meta SET value = value + 1 WHERE key = 'snapshot_generation'; END;
    """,
    # 4: robustness and history: adds sent without an answer (in doubt), an index for the
    # drain's claim, and what was sent to Chengjiyun and what it answered.
    """
    CREATE TABLE in_doubt (             -- addUser sent, answer not yet seen: may exist at Chengjiyun
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        since REAL NOT NULL
    );
    ALTER TABLE outbox ADD COLUMN force INTEGER NOT NULL DEFAULT 0;  -- sent even if acknowledged
    CREATE INDEX outbox_claim ON outbox(kind, next_attempt_at, seq);
    CREATE INDEX dead_letters_source ON dead_letters(source);
    CREATE TABLE history (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        record_id TEXT,                 -- NULL for the classStatus notify
        fields TEXT NOT NULL,           -- the element sent, as JSON
        outcome TEXT NOT NULL,          -- sent / dead / refused / retried
        code INTEGER,
        answer TEXT NOT NULL
    );
    CREATE INDEX history_record ON history(record_id, at);
    CREATE INDEX history_at ON history(at);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
