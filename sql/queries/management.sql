-- name: cancel_workflows
-- Cancel workflows and, recursively, their children: ENQUEUED and PENDING rows become
-- CANCELLED (terminal, dedup id released). A running one starts no further step: the NOTIFY
-- tells it before its next step (steps.ensure_not_cancelled) and wakes it where it waits (recv,
-- sleep). The fence stays: a step body already running keeps its checkpoint.
WITH RECURSIVE tree AS (
    SELECT workflow_id FROM {schema}.workflow_status
    WHERE workflow_id = ANY(%(workflow_ids)s::text[])
    UNION
    SELECT w.workflow_id FROM {schema}.workflow_status AS w
    JOIN tree ON w.parent_workflow_id = tree.workflow_id
), cancelled AS (
    UPDATE {schema}.workflow_status AS w
    SET status = 'CANCELLED', updated_at = {schema}.clock(), completed_at = {schema}.clock()
    FROM tree
    WHERE w.workflow_id = tree.workflow_id AND w.status IN ('ENQUEUED', 'PENDING')
      AND (%(include_roots)s OR w.workflow_id <> ALL(%(workflow_ids)s::text[]))
    RETURNING w.workflow_id
)
SELECT workflow_id, pg_notify(%(channel)s, workflow_id) FROM cancelled;

-- name: resume_workflow
-- Run an ended workflow again from its last completed step: back to its queue, or ownerless
-- PENDING for any executor of its version to adopt. Failed steps after the last completed one
-- are forgotten (so they run again); clearing the fence fences out a run still in progress.
WITH target AS (
    SELECT workflow_id FROM {schema}.workflow_status
    WHERE workflow_id = %(workflow_id)s
      AND status IN ('CANCELLED', 'ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
    FOR UPDATE
), forgotten AS (
    DELETE FROM {schema}.operation_outputs AS o
    USING target
    WHERE o.workflow_id = target.workflow_id AND o.error IS NOT NULL
      AND o.step_id > coalesce((SELECT max(k.step_id) FROM {schema}.operation_outputs AS k
                                WHERE k.workflow_id = target.workflow_id
                                  AND k.error IS NULL), 0)
), resumed AS (
    UPDATE {schema}.workflow_status AS w
    SET status = CASE WHEN w.queue_name IS NULL THEN 'PENDING' ELSE 'ENQUEUED' END,
        executor_id = NULL, attempt = w.attempt + 1, fence = NULL, recovery_attempts = 0,
        output = NULL,
        error = NULL, deadline = NULL, not_before = NULL, completed_at = NULL,
        updated_at = {schema}.clock()
    FROM target WHERE w.workflow_id = target.workflow_id
    RETURNING w.workflow_id, w.status, w.queue_name
)
SELECT workflow_id, status, pg_notify(%(channel)s, coalesce(queue_name, '')) FROM resumed;

-- name: start_enqueued_now
-- resume() of a queued workflow: drop its delay (or the rest of a parked sleep, whose wake-up
-- time is checkpointed: it parks again if it is still early) and wake the workers.
WITH woken AS (
    UPDATE {schema}.workflow_status
    SET not_before = NULL, updated_at = {schema}.clock()
    WHERE workflow_id = %(workflow_id)s AND status = 'ENQUEUED'
    RETURNING workflow_id, queue_name
)
SELECT workflow_id, pg_notify(%(channel)s, queue_name) FROM woken;

-- name: fork_workflow
-- A new workflow running the same code on the same inputs, starting with copies of the
-- source's checkpoints before step `from_step` (so those steps are not run again) and of the
-- events those steps published.
WITH ins AS (
    INSERT INTO {schema}.workflow_status (
        workflow_id, name, status, queue_name, priority, partition_key, attempt, app_version,
        max_recovery_attempts, serializer, inputs, timeout_ms, forked_from)
    SELECT %(workflow_id)s, s.name,
           CASE WHEN s.queue_name IS NULL THEN 'PENDING' ELSE 'ENQUEUED' END,
           s.queue_name, s.priority, s.partition_key, 0,
           coalesce(%(app_version)s, s.app_version), s.max_recovery_attempts, s.serializer,
           s.inputs, s.timeout_ms, s.workflow_id
    FROM {schema}.workflow_status AS s WHERE s.workflow_id = %(source_id)s
    ON CONFLICT (workflow_id) DO NOTHING
    RETURNING workflow_id, status, queue_name
), copied AS (
    INSERT INTO {schema}.operation_outputs (
        workflow_id, step_id, name, output, error, child_workflow_id, executor_id,
        started_at, completed_at)
    SELECT ins.workflow_id, o.step_id, o.name, o.output, o.error, o.child_workflow_id,
           o.executor_id, o.started_at, o.completed_at
    FROM {schema}.operation_outputs AS o, ins
    WHERE o.workflow_id = %(source_id)s AND o.step_id < %(from_step)s
), events AS (
    -- Each key's value as of step from_step: the latest one published before it.
    INSERT INTO {schema}.workflow_events (workflow_id, key, serializer, value)
    SELECT DISTINCT ON (h.key) ins.workflow_id, h.key, h.serializer, h.value
    FROM {schema}.workflow_event_history AS h, ins
    WHERE h.workflow_id = %(source_id)s AND h.step_id < %(from_step)s
    ORDER BY h.key, h.step_id DESC
), history AS (
    INSERT INTO {schema}.workflow_event_history (workflow_id, step_id, key, serializer, value)
    SELECT ins.workflow_id, h.step_id, h.key, h.serializer, h.value
    FROM {schema}.workflow_event_history AS h, ins
    WHERE h.workflow_id = %(source_id)s AND h.step_id < %(from_step)s
)
SELECT workflow_id, status, pg_notify(%(channel)s, coalesce(queue_name, '')) FROM ins;

-- name: list_queued
-- Active workflows of one queue (or of every queue), in the order they are claimed.
SELECT * FROM {schema}.workflow_status
WHERE status IN ('ENQUEUED', 'PENDING') AND queue_name IS NOT NULL
  AND (%(queue_name)s::text IS NULL OR queue_name = %(queue_name)s)
ORDER BY queue_name, priority, seq
LIMIT %(limit)s;

-- name: get_queue
SELECT * FROM {schema}.queues WHERE name = %(name)s;

-- name: queue_overview
-- Per queue (declared, or holding active work): limits as last declared, counts, use of the
-- rate window, how long the oldest claimable row has waited, and live workers serving it.
-- ENQUEUED and PENDING rows are counted apart, each through its partial index
-- (workflow_status_claim_order, workflow_status_running): `status IN (both)` matched neither
-- index's predicate and read the whole table (1.2 s at a million rows; now about 10 ms). No
-- `plan: scans`: that also turns JIT on, and this plan's estimate is high enough to compile
-- (half a second) for a few rows.
WITH enqueued AS (
    SELECT w.queue_name, count(*) AS enqueued,
           count(*) FILTER (WHERE w.not_before > {schema}.clock()) AS delayed,
           min(greatest(w.created_at, coalesce(w.not_before, w.created_at)))
               FILTER (WHERE w.not_before IS NULL OR w.not_before <= {schema}.clock())
               AS oldest_claimable
    FROM {schema}.workflow_status AS w
    WHERE w.status = 'ENQUEUED' AND w.queue_name IS NOT NULL
    GROUP BY w.queue_name
), pending AS (
    SELECT w.queue_name, count(*) AS pending
    FROM {schema}.workflow_status AS w
    WHERE w.status = 'PENDING' AND w.queue_name IS NOT NULL
    GROUP BY w.queue_name
), names AS (
    SELECT name FROM {schema}.queues
    UNION
    SELECT queue_name FROM enqueued
    UNION
    SELECT queue_name FROM pending
)
SELECT n.name, q.concurrency, q.worker_concurrency, q.rate_limit, q.rate_per_seconds,
       coalesce(q.priority_enabled, false) AS priority_enabled,
       coalesce(q.partitioned, false) AS partitioned,
       coalesce(q.paused, false) AS paused, q.paused_at,
       coalesce(e.enqueued, 0) AS enqueued, coalesce(e.delayed, 0) AS delayed,
       coalesce(p.pending, 0) AS pending,
       extract(epoch FROM {schema}.clock() - e.oldest_claimable)::float8 AS oldest_wait_s,
       CASE WHEN q.rate_per_seconds IS NULL THEN NULL ELSE
           (SELECT count(*) FROM {schema}.workflow_status AS w
            WHERE w.queue_name = n.name
              AND w.started_at > {schema}.clock() - q.rate_per_seconds * interval '1 second')
       END AS started_in_window,
       (SELECT count(*) FROM {schema}.executors AS e
        WHERE n.name = ANY(e.queues)
          AND e.heartbeat_at > {schema}.clock() - %(timeout_s)s::float8 * interval '1 second')
           AS live_workers
FROM names AS n
LEFT JOIN {schema}.queues AS q ON q.name = n.name
LEFT JOIN enqueued AS e ON e.queue_name = n.name
LEFT JOIN pending AS p ON p.queue_name = n.name
ORDER BY n.name;

-- name: queue_partitions
-- (ENQUEUED and PENDING apart, each through its partial index, as in queue_overview.)
SELECT queue_name, partition_key, sum(enqueued)::bigint AS enqueued,
       sum(pending)::bigint AS pending
FROM (
    SELECT queue_name, partition_key, count(*) AS enqueued, 0 AS pending
    FROM {schema}.workflow_status
    WHERE status = 'ENQUEUED' AND queue_name IS NOT NULL AND partition_key IS NOT NULL
    GROUP BY queue_name, partition_key
    UNION ALL
    SELECT queue_name, partition_key, 0, count(*)
    FROM {schema}.workflow_status
    WHERE status = 'PENDING' AND queue_name IS NOT NULL AND partition_key IS NOT NULL
    GROUP BY queue_name, partition_key
) AS active
GROUP BY queue_name, partition_key
ORDER BY queue_name, partition_key;

-- name: stranded_work
-- plan: scans
-- Waiting work that no live executor can run, with the reason: no registered version knows
-- its name (unknown_name); it started, so only its own version may go on with it, and no live
-- executor of that version serves it (wrong_version); or no live executor that knows its name
-- serves its queue (no_worker). A row that never started may be started by any version that
-- knows its name. Reported, so it is never silent.
SELECT w.queue_name, w.app_version, w.name,
       CASE WHEN EXISTS (SELECT 1 FROM {schema}.versions)  -- (none yet: no worker ever ran)
                 AND NOT EXISTS (SELECT 1 FROM {schema}.versions AS v
                                 WHERE w.name = ANY(v.workflow_names)) THEN 'unknown_name'
            WHEN w.app_version IS NOT NULL
                 AND (w.started_at IS NOT NULL OR w.forked_from IS NOT NULL
                      OR coalesce(q.strict_versions, false))
                 THEN 'wrong_version'
            ELSE 'no_worker' END AS reason,
       count(*) AS n, min(w.updated_at) AS since
FROM {schema}.workflow_status AS w
LEFT JOIN {schema}.queues AS q ON q.name = w.queue_name
WHERE (w.status = 'ENQUEUED' OR (w.status = 'PENDING' AND w.executor_id IS NULL))
  AND (%(queues)s::text[] IS NULL OR w.queue_name = ANY(%(queues)s::text[]))
  AND NOT EXISTS (
      SELECT 1 FROM {schema}.executors AS e
      JOIN {schema}.versions AS v ON v.app_version = e.app_version
      WHERE e.heartbeat_at > {schema}.clock() - %(timeout_s)s::float8 * interval '1 second'
        AND (w.queue_name IS NULL OR w.queue_name = ANY(e.queues))
        AND w.name = ANY(v.workflow_names)
        AND (e.app_version = w.app_version OR w.app_version IS NULL
             OR (w.status = 'ENQUEUED' AND w.started_at IS NULL AND w.forked_from IS NULL
                 AND NOT coalesce(q.strict_versions, false))))
GROUP BY w.queue_name, w.app_version, w.name, 4
ORDER BY w.queue_name NULLS FIRST, w.app_version, w.name;

-- name: live_versions
-- Versions with a live executor, newest first (to name a retarget's destination).
SELECT e.app_version, count(*) AS executors, max(e.started_at) AS newest
FROM {schema}.executors AS e
WHERE e.app_version IS NOT NULL
  AND e.heartbeat_at > {schema}.clock() - %(timeout_s)s::float8 * interval '1 second'
GROUP BY e.app_version
ORDER BY newest DESC;

-- name: registered_versions
SELECT app_version, workflow_names, first_seen, last_seen FROM {schema}.versions
ORDER BY first_seen;

-- name: list_versions
-- plan: scans
-- The version registry with each version's live executors and its work per status; versions
-- that only appear on rows (enqueued by name for a version, or older than the registry) too.
WITH work AS (
    SELECT app_version, status, count(*) AS n FROM {schema}.workflow_status
    GROUP BY app_version, status
), names AS (
    SELECT app_version FROM {schema}.versions
    UNION SELECT app_version FROM work
)
SELECT n.app_version, v.first_seen,
       greatest(v.last_seen, (SELECT max(e.heartbeat_at) FROM {schema}.executors AS e
                              WHERE e.app_version = n.app_version)) AS last_seen,
       (SELECT count(*) FROM {schema}.executors AS e
        WHERE e.app_version = n.app_version
          AND e.heartbeat_at > {schema}.clock() - %(timeout_s)s::float8 * interval '1 second')
           AS live_executors,
       coalesce(cardinality(v.workflow_names), 0) AS workflows,
       coalesce((SELECT jsonb_object_agg(w.status, w.n) FROM work AS w
                 WHERE w.app_version IS NOT DISTINCT FROM n.app_version), '{{}}'::jsonb)
           AS work
FROM names AS n
LEFT JOIN {schema}.versions AS v ON v.app_version = n.app_version
ORDER BY v.first_seen NULLS LAST, n.app_version NULLS FIRST;

-- name: count_retarget
-- plan: scans
SELECT count(*) AS n FROM {schema}.workflow_status
WHERE app_version IS NOT DISTINCT FROM %(from_version)s
  AND status = ANY(%(statuses)s::text[])
  AND (status <> 'PENDING' OR executor_id IS NULL);

-- name: retarget_batch
-- Move up to `limit` rows of one version to another, keeping their ids; PENDING rows only when
-- ownerless (a live owner's run is left alone). Workers are woken to claim what moved.
WITH picked AS (
    SELECT workflow_id FROM {schema}.workflow_status
    WHERE app_version IS NOT DISTINCT FROM %(from_version)s
      AND status = ANY(%(statuses)s::text[])
      AND (status <> 'PENDING' OR executor_id IS NULL)
    ORDER BY seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE {schema}.workflow_status AS w
    SET app_version = %(to_version)s, updated_at = {schema}.clock()
    WHERE w.workflow_id = ANY(ARRAY(SELECT workflow_id FROM picked))
    RETURNING w.queue_name
)
SELECT count(*) AS n,
       (SELECT count(pg_notify(%(channel)s, q)) FROM (SELECT DISTINCT queue_name AS q
        FROM moved WHERE queue_name IS NOT NULL) AS d) AS woke
FROM moved;

