
-- ---------------------------------------------------------------------------
-- Preview: what the network sees (docs/images.md).
-- ---------------------------------------------------------------------------

-- VOLATILE: without a seed every call draws other images and crops.
-- PARALLEL RESTRICTED: it runs queries through SPI, once per call; nothing
-- is gained in a worker.  Not STRICT: a NULL seed means "random".
-- Runs as the caller (no SECURITY DEFINER): privileges and row-level security
-- on tl_images decide which images can be previewed.  Its SPI queries name
-- @extschema@.tl_images; the search_path setting pins their operators.
CREATE FUNCTION @extschema@.tl_preview(dataset text, split text DEFAULT 'train',
	n integer DEFAULT 4, seed bigint DEFAULT NULL,
	OUT jpeg bytea, OUT labels text[])
RETURNS record
LANGUAGE C VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'tl_preview';
COMMENT ON FUNCTION @extschema@.tl_preview(text, text, integer, bigint) IS
	'A JPEG grid of n random images of a dataset split as the tutorial''s transforms show them, with their labels in grid order.';
