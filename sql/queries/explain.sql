-- The facts `pgflow explain` reasons from (pgflow/explain.py gathers them, pgflow/diagnosis.py
-- turns them into reasons), and the executors `pgflow workers` lists (pgflow/activity.py).
-- Every time is the database's ({schema}.clock()); the later statements of one explanation
-- take the first one's `now`, so that they all describe one instant.

-- name: explain_workflow
-- One workflow, its queue as last declared, the database's time, whether any registered
-- version knows its name (NULL: no version registered yet), and the recv it waits in, if one
-- recorded a wait (migration 0013).
SELECT w.workflow_id, w.seq, w.name, w.status, w.queue_name, w.priority, w.partition_key,
       w.app_version, w.executor_id, w.started_at, w.forked_from, w.not_before,
       w.created_at, w.updated_at, w.completed_at, w.serializer,
       w.wait_step, w.wait_topic, w.wait_since, w.wait_until,
       q.name IS NOT NULL AS queue_declared, q.concurrency, q.worker_concurrency,
       q.rate_limit, q.rate_per_seconds, coalesce(q.priority_enabled, false) AS priority_enabled,
       coalesce(q.partitioned, false) AS partitioned,
       coalesce(q.strict_versions, false) AS strict_versions,
       coalesce(q.paused, false) AS paused, q.paused_at,
       CASE WHEN NOT EXISTS (SELECT 1 FROM {schema}.versions) THEN NULL
            ELSE EXISTS (SELECT 1 FROM {schema}.versions AS v
                         WHERE w.name = ANY(v.workflow_names)) END AS name_known,
       {schema}.clock() AS now
FROM {schema}.workflow_status AS w
LEFT JOIN {schema}.queues AS q ON q.name = w.queue_name
WHERE w.workflow_id = %(workflow_id)s;

-- name: explain_running
-- What holds a queue's concurrency (a key's, on a partitioned queue; partition_key NULL: the
-- whole queue): its PENDING workflows, longest running first, the first `limit` of them, and
-- how many there are in all.
SELECT workflow_id, executor_id, started_at, count(*) OVER () AS total
FROM {schema}.workflow_status
WHERE status = 'PENDING' AND queue_name = %(queue_name)s
  AND (%(partition_key)s::text IS NULL OR partition_key = %(partition_key)s)
ORDER BY started_at NULLS LAST, workflow_id
LIMIT %(limit)s;

-- name: explain_rate_window
-- Starts of a queue (of one key, on a partitioned queue) in the rate window ending now, as the
-- claim counts them, and when the next start is allowed: the window must first lose the
-- oldest (used - limit + 1) of its starts.
WITH starts AS (
    SELECT started_at FROM {schema}.workflow_status
    WHERE queue_name = %(queue_name)s
      AND (%(partition_key)s::text IS NULL OR partition_key = %(partition_key)s)
      AND started_at > %(now)s::timestamptz - %(per_s)s::float8 * interval '1 second'
)
SELECT (SELECT count(*) FROM starts) AS used,
       (SELECT started_at FROM starts ORDER BY started_at
        OFFSET greatest((SELECT count(*) FROM starts) - %(rate_limit)s, 0) LIMIT 1)
           + %(per_s)s::float8 * interval '1 second' AS next_slot;

-- name: explain_ahead
-- Due ENQUEUED workflows a claim takes before this one: of a higher priority (a lower number),
-- and of the same priority enqueued earlier; on a partitioned queue, of the same key.
SELECT count(*) FILTER (WHERE priority < %(priority)s) AS higher_priority,
       count(*) FILTER (WHERE priority = %(priority)s AND seq < %(seq)s) AS earlier
FROM {schema}.workflow_status
WHERE status = 'ENQUEUED' AND queue_name = %(queue_name)s
  AND (%(partition_key)s::text IS NULL OR partition_key = %(partition_key)s)
  AND (not_before IS NULL OR not_before <= %(now)s::timestamptz)
  AND (priority, seq) < (%(priority)s, %(seq)s);

-- name: explain_executors
-- plan: scans
-- Every executor (live or not: `alive` by the heartbeat timeout), whether its version knows
-- the workflow's name (NULL: its version is not registered), and how many PENDING workflows
-- of the queue (of the key, on a partitioned queue) it holds: its worker_concurrency's use.
SELECT e.executor_id, e.hostname, e.pid, e.app_version, e.kind, e.queues, e.started_at,
       e.heartbeat_at,
       e.heartbeat_at > %(now)s::timestamptz - %(timeout_s)s::float8 * interval '1 second'
           AS alive,
       (SELECT %(name)s = ANY(v.workflow_names) FROM {schema}.versions AS v
        WHERE v.app_version = e.app_version) AS knows_name,
       (SELECT count(*) FROM {schema}.workflow_status AS w
        WHERE w.status = 'PENDING' AND w.executor_id = e.executor_id
          AND w.queue_name = %(queue_name)s
          AND (%(partition_key)s::text IS NULL OR w.partition_key = %(partition_key)s))
           AS running_here
FROM {schema}.executors AS e
ORDER BY e.started_at, e.executor_id;

-- name: explain_last_checkpoint
-- A workflow's latest checkpoint: the steps up to it completed, the next one is running.
SELECT step_id, name, output, error, completed_at FROM {schema}.operation_outputs
WHERE workflow_id = %(workflow_id)s
ORDER BY step_id DESC
LIMIT 1;

-- name: explain_messages
-- Messages sent to a workflow that no recv has taken yet, per topic ('' is no topic).
SELECT topic, count(*) AS n, min(created_at) AS oldest FROM {schema}.notifications
WHERE destination_id = %(workflow_id)s
GROUP BY topic
ORDER BY topic;

-- name: list_workers
-- plan: scans
-- Every executor with its heartbeat's age and liveness (by the timeout), newest first.
SELECT e.executor_id, e.hostname, e.pid, e.app_version, e.kind, e.queues, e.started_at,
       e.heartbeat_at, {schema}.clock() AS now,
       e.heartbeat_at > {schema}.clock() - %(timeout_s)s::float8 * interval '1 second'
           AS alive
FROM {schema}.executors AS e
ORDER BY alive DESC, e.started_at DESC, e.executor_id;

-- name: list_executor_deaths
-- Executors reaped recently (the record keeps the newest 100 of the last day), newest first.
SELECT executor_id, hostname, pid, app_version, kind, last_heartbeat_at, died_at, reaped_by,
       released, {schema}.clock() AS now
FROM {schema}.executor_deaths
ORDER BY died_at DESC, executor_id
LIMIT %(limit)s;

-- name: list_worker_work
-- The PENDING workflows of the given executors (what each runs now), longest running first.
SELECT executor_id, workflow_id, name, queue_name, partition_key, started_at
FROM {schema}.workflow_status
WHERE status = 'PENDING' AND executor_id = ANY(%(executor_ids)s::text[])
ORDER BY started_at NULLS LAST, workflow_id;
