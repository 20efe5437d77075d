-- The key status as src/claim.rs decides it, stored at each change so lists filter and page on it
-- by index. Rows from before this migration are filled in by the program right after it (the rule
-- lives in src/claim.rs, not in SQL).
ALTER TABLE keys ADD COLUMN status TEXT CHECK (status IN ('active', 'inactive', 'used'));
CREATE INDEX keys_status ON keys (status);

-- Who made each change, beside where from. Older lines: the command line, or the enrolling device
-- ('-' when a malformed request named none).
ALTER TABLE audit ADD COLUMN actor TEXT NOT NULL DEFAULT '';
UPDATE audit SET actor = CASE WHEN source = 'cli' THEN 'cli' ELSE coalesce(unit_id, '-') END;
UPDATE audit SET source = 'local' WHERE source = 'cli';
CREATE INDEX audit_unit_id ON audit (unit_id) WHERE unit_id IS NOT NULL;

-- Facts about the database itself: the UMS ID it was made under.
CREATE TABLE store_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
