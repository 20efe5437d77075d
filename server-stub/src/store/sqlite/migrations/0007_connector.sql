-- The device connector: which server holds a device's WebSocket (none while it is offline) and
-- the session's number there (so that an old session ending clears nothing of a newer one), and
-- the commands queued for devices, each routed to the server that held the device's session when
-- it was queued (a `disconnect` is queued when a connected device is deleted).
ALTER TABLE devices ADD COLUMN online_server TEXT;
ALTER TABLE devices ADD COLUMN online_session INTEGER;
CREATE INDEX devices_online_server ON devices (online_server) WHERE online_server IS NOT NULL;

CREATE TABLE device_commands (
    id        INTEGER PRIMARY KEY,
    server    TEXT    NOT NULL,
    unit_id   TEXT    NOT NULL,
    command   TEXT    NOT NULL,
    queued_at INTEGER NOT NULL
);
CREATE INDEX device_commands_server ON device_commands (server, id);
