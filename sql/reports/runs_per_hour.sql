-- runs_per_hour: runs started per hour (UTC).
-- Rows: run rows with status = 'running' (one per started run).
-- Columns:
--   tenant
--   hour          TIMESTAMP  start of the hour, UTC
--   runs_started  BIGINT
SELECT
    tenant,
    date_trunc('hour', at) AS hour,
    COUNT(*) AS runs_started
FROM runs
WHERE status = 'running'
GROUP BY tenant, date_trunc('hour', at)
ORDER BY tenant, hour
