-- The Main UMS ID and server heartbeats, as in the PostgreSQL store (a lone SQLite server is its
-- own Main UMS ID; the rows keep both stores alike, and make `database copy` a plain copy).
CREATE TABLE main_ums_id (
    one             INTEGER PRIMARY KEY DEFAULT 1 CHECK (one = 1),
    fingerprint     TEXT    NOT NULL,
    certificate_pem TEXT    NOT NULL,
    sealed          BLOB    NOT NULL
);

CREATE TABLE servers (
    name         TEXT    PRIMARY KEY,
    fingerprint  TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
