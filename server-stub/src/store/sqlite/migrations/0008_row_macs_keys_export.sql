-- Account, token and session rows carry a MAC (src/row_mac.rs) under a key only a server holding
-- the UMS ID has. Rows from before have none: the first server to start with the key seals the
-- account and token rows once (Store::seal_admin_rows); sessions simply end (log in again).
ALTER TABLE accounts ADD COLUMN mac BLOB CHECK (mac IS NULL OR length(mac) = 32);
ALTER TABLE tokens ADD COLUMN mac BLOB CHECK (mac IS NULL OR length(mac) = 32);
ALTER TABLE sessions ADD COLUMN mac BLOB CHECK (mac IS NULL OR length(mac) = 32);
DELETE FROM sessions;

-- Exports need keys:export, no longer keys:write. Whoever could export before still can: accounts
-- and tokens holding keys:write get keys:export beside it, neither more nor less than they could
-- do, and the audit log says so. Take it away with `ums-stub admins edit`.
INSERT INTO audit (at, event, actor, source, outcome, detail)
    SELECT CAST(strftime('%s', 'now') AS INTEGER), 'accounts.edit', 'cli', 'local', 'ok',
           'account ' || name || ', rights ' || rights || ',keys:export (keys:export split from keys:write)'
    FROM accounts WHERE ',' || rights || ',' LIKE '%,keys:write,%';
UPDATE accounts SET rights = rights || ',keys:export'
    WHERE ',' || rights || ',' LIKE '%,keys:write,%';
UPDATE tokens SET rights = rights || ',keys:export'
    WHERE ',' || rights || ',' LIKE '%,keys:write,%';
