-- Enrolled devices and the audit log.
CREATE TABLE devices (
    unit_id     TEXT    PRIMARY KEY,
    public_key  BLOB    NOT NULL,
    certificate BLOB    NOT NULL,
    serial      TEXT    NOT NULL UNIQUE,
    not_after   INTEGER NOT NULL,
    key_id      INTEGER REFERENCES keys (id) ON DELETE SET NULL,
    key_kind    TEXT    NOT NULL,
    enrolled_at INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    inventory   TEXT
);
CREATE TABLE audit (
    id       INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,
    event    TEXT    NOT NULL,
    unit_id  TEXT,
    key_id   INTEGER,
    source   TEXT    NOT NULL,
    outcome  TEXT    NOT NULL,
    detail   TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX audit_at ON audit (at);
