-- workflow_success: how each workflow's finished runs ended and how long they took.
-- Rows: terminal run rows (status <> 'running'), one output row per tenant and workflow.
-- Columns:
--   tenant, workflow
--   runs_finished  BIGINT  terminal run rows
--   succeeded      BIGINT  of which status = 'succeeded'
--   success_rate   DOUBLE  succeeded / runs_finished, 0..1
--   p50_ms, p95_ms, p99_ms  DOUBLE  exact percentiles of duration_ms (percentile_cont:
--     the value at rank p*(n-1) of the sorted durations, linear interpolation between
--     the two closest ranks, as in PostgreSQL); rows without duration_ms are ignored.
SELECT
    tenant,
    workflow,
    COUNT(*) AS runs_finished,
    SUM(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END) AS succeeded,
    CAST(SUM(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END) AS DOUBLE) / COUNT(*) AS success_rate,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY CAST(duration_ms AS DOUBLE)) AS p50_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY CAST(duration_ms AS DOUBLE)) AS p95_ms,
    percentile_cont(0.99) WITHIN GROUP (ORDER BY CAST(duration_ms AS DOUBLE)) AS p99_ms
FROM runs
WHERE status <> 'running'
GROUP BY tenant, workflow
ORDER BY tenant, workflow
