-- The whole schema of the PostgreSQL store, equal to SQLite's migrations 0001 to 0005 (times are
-- seconds since the epoch in both, so rows copy across unchanged). Key values are never here in
-- the clear: only an HMAC look-up digest and an AES-GCM seal; passwords are argon2id PHC strings,
-- tokens and session cookies SHA-256 digests.
CREATE TABLE keys (
    id          BIGSERIAL PRIMARY KEY,
    kind        TEXT    NOT NULL CHECK (kind IN ('one-time', 'device-bound', 'mass')),
    lookup      BYTEA   NOT NULL UNIQUE CHECK (length(lookup) = 32),
    sealed      BYTEA   NOT NULL,
    unit_id     TEXT    CHECK ((kind = 'device-bound') = (unit_id IS NOT NULL)),
    active      BOOLEAN NOT NULL DEFAULT TRUE,
    status      TEXT    NOT NULL CHECK (status IN ('active', 'inactive', 'used')),
    usage_count BIGINT  NOT NULL DEFAULT 0 CHECK (usage_count >= 0),
    usage_date  BIGINT,
    comment     TEXT    NOT NULL DEFAULT '',
    created_at  BIGINT  NOT NULL
);
CREATE INDEX keys_unit_id ON keys (unit_id) WHERE unit_id IS NOT NULL;
CREATE INDEX keys_kind ON keys (kind);
CREATE INDEX keys_status ON keys (status);

CREATE TABLE devices (
    unit_id         TEXT   PRIMARY KEY,
    public_key      BYTEA  NOT NULL,
    certificate     BYTEA  NOT NULL,
    serial          TEXT   NOT NULL UNIQUE,
    not_after       BIGINT NOT NULL,
    key_id          BIGINT REFERENCES keys (id) ON DELETE SET NULL,
    key_kind        TEXT   NOT NULL,
    enrolled_at     BIGINT NOT NULL,
    last_seen       BIGINT NOT NULL,
    inventory       TEXT,
    previous_serial TEXT
);

CREATE TABLE audit (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    event   TEXT   NOT NULL,
    actor   TEXT   NOT NULL DEFAULT '',
    source  TEXT   NOT NULL,
    unit_id TEXT,
    key_id  BIGINT,
    outcome TEXT   NOT NULL,
    detail  TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_unit_id ON audit (unit_id) WHERE unit_id IS NOT NULL;

CREATE TABLE store_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE accounts (
    name          TEXT   PRIMARY KEY,
    password_hash TEXT   NOT NULL,
    rights        TEXT   NOT NULL CHECK (rights <> ''),
    created_at    BIGINT NOT NULL,
    changed_at    BIGINT NOT NULL
);

CREATE TABLE tokens (
    id         TEXT   PRIMARY KEY,
    digest     BYTEA  NOT NULL CHECK (length(digest) = 32),
    account    TEXT   NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
    name       TEXT   NOT NULL,
    rights     TEXT   NOT NULL CHECK (rights <> ''),
    created_at BIGINT NOT NULL,
    expires_at BIGINT
);
CREATE INDEX tokens_account ON tokens (account);

CREATE TABLE sessions (
    digest     BYTEA  PRIMARY KEY CHECK (length(digest) = 32),
    account    TEXT   NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_account ON sessions (account);
