-- Model tables: user data kept by pg_dump (identity sequence too).
SELECT c.relname
  FROM pg_extension e
  CROSS JOIN LATERAL unnest(e.extconfig) AS cfg(oid)
  JOIN pg_class c ON c.oid = cfg.oid
 WHERE e.extname = 'transfer'
   AND c.relname IN ('tl_stored_models', 'tl_model_tensors', 'tl_stored_models_id_seq')
 ORDER BY 1;
