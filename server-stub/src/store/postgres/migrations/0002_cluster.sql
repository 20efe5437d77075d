-- Distributed UMS: the Main UMS ID (its backup sealed under the cluster secret; the certificate is
-- public) and one heartbeat row per server, stamped with the database's clock.
CREATE TABLE main_ums_id (
    one             BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    fingerprint     TEXT    NOT NULL,
    certificate_pem TEXT    NOT NULL,
    sealed          BYTEA   NOT NULL
);

CREATE TABLE servers (
    name         TEXT   PRIMARY KEY,
    fingerprint  TEXT   NOT NULL,
    status       TEXT   NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
