-- Key lifetimes, usage limits and folders (src/claim.rs: Limits), and the folder a device landed
-- in. Each is optional and NULL keeps the old behaviour: a key valid from its creation for ever,
-- a mass-deployment key without a limit, a device in no folder. Times are seconds since the
-- epoch, as everywhere. The status column keeps only the part of a key's status that does not
-- depend on the time (active, inactive, used); expired, not yet valid and exhausted are decided
-- when a key is read, since time moves.
ALTER TABLE keys ADD COLUMN not_before INTEGER;
ALTER TABLE keys ADD COLUMN expires_at INTEGER;
ALTER TABLE keys ADD COLUMN usage_limit INTEGER
    CHECK (usage_limit IS NULL OR (usage_limit >= 1 AND kind = 'mass'));
ALTER TABLE keys ADD COLUMN folder TEXT;
CREATE INDEX keys_expires_at ON keys (expires_at) WHERE expires_at IS NOT NULL;

-- Copied from the key at enrollment: later edits or deletion of the key do not move the device.
ALTER TABLE devices ADD COLUMN folder TEXT;
CREATE INDEX devices_folder ON devices (folder) WHERE folder IS NOT NULL;
