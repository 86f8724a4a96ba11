-- name: register_executor
-- The executor's row, and its version in the registry (with the workflow names it knows).
WITH version AS (
    INSERT INTO {schema}.versions AS v (app_version, workflow_names)
    SELECT %(app_version)s, %(names)s::text[] WHERE %(app_version)s::text IS NOT NULL
    ON CONFLICT (app_version) DO UPDATE
        SET last_seen = {schema}.clock(),
            workflow_names = ARRAY(SELECT DISTINCT unnest(v.workflow_names || EXCLUDED.workflow_names)
                                   ORDER BY 1)
)
INSERT INTO {schema}.executors (executor_id, hostname, pid, app_version, kind, queues)
VALUES (%(executor_id)s, %(hostname)s, %(pid)s, %(app_version)s, %(kind)s, %(queues)s)
ON CONFLICT (executor_id) DO UPDATE SET heartbeat_at = {schema}.clock()
RETURNING heartbeat_at;

-- name: heartbeat
-- Returns no row when this executor was declared dead (its work is no longer its own).
UPDATE {schema}.executors SET heartbeat_at = {schema}.clock()
WHERE executor_id = %(executor_id)s
RETURNING heartbeat_at, extract(epoch FROM {schema}.clock())::float8 AS db_epoch;

-- name: deregister_executor
-- Always with release_executor_work in the same transaction (recovery.deregister_executor).
-- The registry keeps when each version was last seen.
WITH gone AS (
    DELETE FROM {schema}.executors WHERE executor_id = %(executor_id)s
    RETURNING app_version, heartbeat_at
)
UPDATE {schema}.versions AS v SET last_seen = greatest(v.last_seen, gone.heartbeat_at)
FROM gone WHERE v.app_version = gone.app_version;

-- name: executors_on_host
SELECT executor_id, pid FROM {schema}.executors
WHERE hostname = %(hostname)s AND executor_id <> %(executor_id)s;

-- name: claim_dead_executors
-- Whoever deletes a dead executor's row releases its work: exactly once, however many notice.
-- A heartbeat counts as expired only over time the reaper itself was heartbeating
-- (healthy_since), and never for the reaper's own process (alive_ids: it is running); no
-- timeout_s: only the given dead ids. The registry keeps when each version was last seen.
-- Each death is recorded with the PENDING workflows it held (release_executor_work hands
-- them back next, in the same transaction); the record keeps the newest keep_deaths deaths,
-- none older than keep_deaths_s, pruned only when someone died.
WITH gone AS (
    DELETE FROM {schema}.executors
    WHERE executor_id <> %(executor_id)s
      AND (executor_id = ANY(%(dead_ids)s::text[])
           OR (executor_id <> ALL(%(alive_ids)s::text[])
               AND greatest(heartbeat_at, %(healthy_since)s::timestamptz)
                   < {schema}.clock() - %(timeout_s)s::float8 * interval '1 second'))
    RETURNING executor_id, hostname, pid, app_version, kind, heartbeat_at
), seen AS (
    UPDATE {schema}.versions AS v SET last_seen = greatest(v.last_seen, g.last)
    FROM (SELECT app_version, max(heartbeat_at) AS last FROM gone GROUP BY app_version) AS g
    WHERE v.app_version = g.app_version
), held AS (
    SELECT w.executor_id, count(*)::int AS n
    FROM {schema}.workflow_status AS w
    WHERE w.status = 'PENDING' AND w.executor_id IN (SELECT executor_id FROM gone)
    GROUP BY w.executor_id
), recorded AS (
    INSERT INTO {schema}.executor_deaths AS d (executor_id, hostname, pid, app_version, kind,
        last_heartbeat_at, died_at, reaped_by, released)
    SELECT g.executor_id, g.hostname, g.pid, g.app_version, g.kind, g.heartbeat_at,
           {schema}.clock(), %(executor_id)s, coalesce(h.n, 0)
    FROM gone AS g LEFT JOIN held AS h USING (executor_id)
    ON CONFLICT (executor_id) DO UPDATE
    SET died_at = excluded.died_at, reaped_by = excluded.reaped_by,
        released = d.released + excluded.released
), pruned AS (
    DELETE FROM {schema}.executor_deaths
    WHERE EXISTS (SELECT 1 FROM gone)
      AND (died_at < {schema}.clock() - %(keep_deaths_s)s::float8 * interval '1 second'
           OR executor_id IN (SELECT executor_id FROM {schema}.executor_deaths
                              ORDER BY died_at DESC, executor_id
                              OFFSET greatest(%(keep_deaths)s::int - 1, 0)))
)
SELECT executor_id FROM gone;

-- name: release_executor_work
-- Hand back every PENDING workflow of the given executors: queued ones to their queue,
-- the others to the ownerless PENDING pool. A charged release counts a recovery attempt and
-- ends a workflow that is over its limit. Clearing the fence fences the old owner out.
-- Workers are woken (NOTIFY at commit) to claim what went back to a queue at once.
WITH released AS (
UPDATE {schema}.workflow_status
SET status = CASE
        WHEN %(charge)s AND max_recovery_attempts IS NOT NULL
             AND recovery_attempts + 1 > max_recovery_attempts
            THEN 'MAX_RECOVERY_ATTEMPTS_EXCEEDED'
        WHEN queue_name IS NOT NULL THEN 'ENQUEUED'
        ELSE 'PENDING' END,
    error = CASE
        WHEN %(charge)s AND max_recovery_attempts IS NOT NULL
             AND recovery_attempts + 1 > max_recovery_attempts
            THEN json_build_object(
                'type', 'MaxRecoveryAttemptsExceeded', 'module', 'pgflow.errors',
                'message', format('workflow %%s exceeded its maximum of %%s recovery attempts '
                    '(it was running each time its process died); fix the cause, then '
                    '`pgflow workflows resume` it', workflow_id, max_recovery_attempts),
                'args', json_build_array(workflow_id, max_recovery_attempts),
                'traceback', '',
                'attrs', json_build_object('workflow_id', workflow_id,
                                           'max_recovery_attempts', max_recovery_attempts)
            )::text ELSE error END,
    completed_at = CASE
        WHEN %(charge)s AND max_recovery_attempts IS NOT NULL
             AND recovery_attempts + 1 > max_recovery_attempts
            THEN {schema}.clock() ELSE completed_at END,
    recovery_attempts = recovery_attempts + CASE WHEN %(charge)s THEN 1 ELSE 0 END,
    executor_id = NULL, attempt = attempt + 1, fence = NULL, updated_at = {schema}.clock()
WHERE executor_id = ANY(%(executor_ids)s::text[]) AND status = 'PENDING'
  AND (%(workflow_ids)s::text[] IS NULL OR workflow_id = ANY(%(workflow_ids)s::text[]))
RETURNING workflow_id, status, queue_name
)
SELECT workflow_id, status, pg_notify(%(channel)s, coalesce(queue_name, '')) IS NULL AS woke
FROM released;
