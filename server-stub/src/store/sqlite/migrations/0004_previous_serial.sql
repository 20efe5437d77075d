-- The serial of a device's previous certificate, honoured until the device has been seen with the
-- current one (src/renewal.rs): a renewal whose answer was lost must not orphan the device.
ALTER TABLE devices ADD COLUMN previous_serial TEXT;
