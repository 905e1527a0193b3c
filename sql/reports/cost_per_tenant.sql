-- cost_per_tenant: what each tenant's steps used, for cost attribution.
-- Rows: every step row.
-- Columns:
--   tenant
--   step_seconds   DOUBLE  sum(duration_ms) / 1000 (worker time of applied task results)
--   output_bytes   BIGINT  sum of output_bytes (JSON size of successful task outputs)
--   task_attempts  BIGINT  task dispatches: rows with kind = 'task' and status = 'started'
SELECT
    tenant,
    CAST(COALESCE(SUM(duration_ms), 0) AS DOUBLE) / 1000.0 AS step_seconds,
    COALESCE(SUM(output_bytes), 0) AS output_bytes,
    SUM(CASE WHEN kind = 'task' AND status = 'started' THEN 1 ELSE 0 END) AS task_attempts
FROM steps
GROUP BY tenant
ORDER BY tenant
