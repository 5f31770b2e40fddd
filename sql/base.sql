-- The extension loads and reports its version.
SELECT tl_version();
