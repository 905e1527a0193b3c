-- failing_steps: where steps fail, by connector and error class.
-- Rows: step rows whose status is failed, timed_out or retrying (every failed attempt
-- counts, including the ones retried later).
-- Columns:
--   tenant
--   connector      VARCHAR  null for steps that are not tasks
--   error_class    VARCHAR  retryable, fatal, timeout, circuit_open
--   failures       BIGINT   failed attempts
--   runs_affected  BIGINT   distinct runs with at least one of them
SELECT
    tenant,
    connector,
    error_class,
    COUNT(*) AS failures,
    COUNT(DISTINCT run_id) AS runs_affected
FROM steps
WHERE status IN ('failed', 'timed_out', 'retrying')
GROUP BY tenant, connector, error_class
ORDER BY failures DESC, tenant, connector, error_class
