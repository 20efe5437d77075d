-- Administrator accounts, their API tokens and their Web App sessions. Passwords are argon2id PHC
-- strings; tokens and sessions are kept only as the SHA-256 of their secret. Rights are the names
-- of src/rights.rs, comma-separated.
CREATE TABLE accounts (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    rights        TEXT NOT NULL CHECK (rights <> ''),
    created_at    INTEGER NOT NULL,
    changed_at    INTEGER NOT NULL
);

CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    digest     BLOB NOT NULL CHECK (length(digest) = 32),
    account    TEXT NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    rights     TEXT NOT NULL CHECK (rights <> ''),
    created_at INTEGER NOT NULL,
    expires_at INTEGER
);
CREATE INDEX tokens_account ON tokens (account);

CREATE TABLE sessions (
    digest     BLOB PRIMARY KEY CHECK (length(digest) = 32),
    account    TEXT NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_account ON sessions (account);
