-- Keys, held only as a look-up digest and a sealed value (see src/vault.rs).
CREATE TABLE keys (
    id          INTEGER PRIMARY KEY,
    kind        TEXT    NOT NULL CHECK (kind IN ('one-time', 'device-bound', 'mass')),
    lookup      BLOB    NOT NULL UNIQUE CHECK (length(lookup) = 32),
    sealed      BLOB    NOT NULL,
    unit_id     TEXT    CHECK ((kind = 'device-bound') = (unit_id IS NOT NULL)),
    active      INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    usage_count INTEGER NOT NULL DEFAULT 0 CHECK (usage_count >= 0),
    usage_date  INTEGER,
    comment     TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL
);
CREATE INDEX keys_unit_id ON keys (unit_id) WHERE unit_id IS NOT NULL;
CREATE INDEX keys_kind ON keys (kind);
