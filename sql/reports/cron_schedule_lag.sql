-- cron_schedule_lag: how late cron runs started after the tick they were scheduled for.
-- Rows: run rows with status = 'running' and source = 'cron' that carry scheduled_at;
-- lag = at - scheduled_at in milliseconds (the files store microseconds, see
-- sql/src/layout.rs, so the difference of the raw values / 1000 is exact).
-- Columns:
--   tenant, workflow
--   cron_runs   BIGINT
--   avg_lag_ms  DOUBLE  mean lag
--   p95_lag_ms  DOUBLE  exact 95th percentile (percentile_cont, as in workflow_success)
--   max_lag_ms  DOUBLE
SELECT
    tenant,
    workflow,
    COUNT(*) AS cron_runs,
    AVG(lag_ms) AS avg_lag_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY lag_ms) AS p95_lag_ms,
    MAX(lag_ms) AS max_lag_ms
FROM (
    SELECT
        tenant,
        workflow,
        CAST(CAST(at AS BIGINT) - CAST(scheduled_at AS BIGINT) AS DOUBLE) / 1000.0 AS lag_ms
    FROM runs
    WHERE status = 'running' AND source = 'cron' AND scheduled_at IS NOT NULL
) AS cron
GROUP BY tenant, workflow
ORDER BY tenant, workflow
