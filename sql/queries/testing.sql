-- Statements of pgflow.testing (helpers for users' own tests, on a real database).

-- name: testing_create_database
-- {template}: template0 (empty), or a migrated test database to copy.
CREATE DATABASE {database} TEMPLATE {template};

-- name: testing_drop_database
-- FORCE (PostgreSQL 13+) ends sessions a test left connected.
DROP DATABASE IF EXISTS {database} WITH (FORCE);

-- name: testing_databases
SELECT datname FROM pg_database WHERE datname LIKE 'pgflow\_testing\_%%';

-- name: testing_queue_history
-- plan: scans
-- Every row of one queue, in enqueue order, for pgflow.testing.check_history.
SELECT workflow_id, seq, name, status, app_version, dedup_id, priority, partition_key,
       executor_id, attempt, recovery_attempts, created_at, not_before, started_at,
       completed_at
FROM {schema}.workflow_status
WHERE queue_name = %(queue_name)s
ORDER BY seq;

-- name: testing_next_start
-- What a drained queue waits for: the next delay to end, the next rate window to end, and the
-- PENDING rows of the queues (with an owner, and without).
WITH limited AS (
    SELECT * FROM unnest(%(queues)s::text[], %(per_s)s::float8[]) AS q (queue_name, per_s)
    WHERE per_s IS NOT NULL
)
SELECT {schema}.clock() AS now,
    (SELECT min(not_before) FROM {schema}.workflow_status
      WHERE status = 'ENQUEUED' AND queue_name = ANY(%(queues)s::text[])
        AND app_version = %(app_version)s AND not_before > {schema}.clock()) AS next_not_before,
    (SELECT min(w.started_at + q.per_s * interval '1 second')
       FROM limited q JOIN {schema}.workflow_status w ON w.queue_name = q.queue_name
      WHERE w.started_at > {schema}.clock() - q.per_s * interval '1 second') AS next_window_end,
    (SELECT count(*) FROM {schema}.workflow_status
      WHERE status = 'PENDING' AND executor_id IS NOT NULL
        AND queue_name = ANY(%(queues)s::text[])) AS owned,
    (SELECT count(*) FROM {schema}.workflow_status
      WHERE status = 'PENDING' AND executor_id IS NULL
        AND app_version = %(app_version)s) AS orphans;
