-- The dashboard's reads (pgflow/dashboard/reading.py). Each stays fast with millions of rows in
-- workflow_status: it walks an index and stops at a LIMIT, or counts through a partial index of
-- the (few) rows it counts.

-- name: dashboard_table_estimate
-- The planner's estimate of workflow_status's size (-1: never analyzed): past a threshold the
-- overview estimates the SUCCESS count rather than counting a million rows per refresh.
SELECT c.reltuples::float8 AS estimate
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = 'workflow_status';

-- name: dashboard_status_counts
-- plan: scans
-- Exact counts by status (the overview uses it while the table is small).
SELECT status, count(*) AS n
FROM {schema}.workflow_status
GROUP BY status;

-- name: dashboard_unfinished_counts
-- Exact counts of the statuses kept in partial indexes: waiting and running
-- (workflow_status_claim_order, workflow_status_running), failed (workflow_status_failed, whose
-- status is in the index since 0015: an index-only count).
SELECT 'ENQUEUED' AS status, count(*) AS n FROM {schema}.workflow_status
WHERE status = 'ENQUEUED'
UNION ALL
SELECT 'PENDING', count(*) FROM {schema}.workflow_status
WHERE status = 'PENDING'
UNION ALL
SELECT status, count(*) FROM {schema}.workflow_status
WHERE status IN ('ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
GROUP BY status;

-- name: dashboard_throughput
-- Workflows that ended in the last hour, per minute ago (0: this minute), among the newest
-- %(sample)s workflows by seq; sample_from (the oldest creation time in that sample) tells the
-- page whether the sample reached back a full hour.
WITH recent AS MATERIALIZED (
    SELECT status, created_at, completed_at
    FROM {schema}.workflow_status
    ORDER BY seq DESC
    LIMIT %(sample)s
), ended AS (
    SELECT floor(extract(epoch FROM {schema}.clock() - completed_at) / 60)::int AS ago, status
    FROM recent
    WHERE completed_at > {schema}.clock() - interval '1 hour'
)
SELECT e.ago,
       count(*) FILTER (WHERE e.status = 'SUCCESS') AS succeeded,
       count(*) FILTER (WHERE e.status IN ('ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')) AS failed,
       (SELECT min(created_at) FROM recent) AS sample_from,
       (SELECT count(*) FROM recent) AS sampled,
       {schema}.clock() AS now
FROM ended AS e
GROUP BY e.ago
UNION ALL
-- one row even when nothing ended, to carry the sample's reach
SELECT NULL, 0, 0, (SELECT min(created_at) FROM recent), (SELECT count(*) FROM recent),
       {schema}.clock();

-- name: dashboard_list_workflows
-- One page of the workflow list, newest first, after the keyset cursor %(before)s (a seq).
-- The filters apply to at most %(budget)s rows walked down the seq index, so a rare filter
-- costs a bounded scan; the page then offers to search further back.
SELECT w.workflow_id, w.seq, w.name, w.status, w.queue_name, w.dedup_id, w.priority,
       w.partition_key, w.parent_workflow_id, w.executor_id, w.app_version,
       w.recovery_attempts, w.created_at, w.started_at, w.updated_at, w.completed_at
FROM (
    SELECT workflow_id, seq, name, status, queue_name, dedup_id, priority, partition_key,
           parent_workflow_id, executor_id, app_version, recovery_attempts, created_at,
           started_at, updated_at, completed_at
    FROM {schema}.workflow_status
    WHERE seq < coalesce(%(before)s::bigint, 9223372036854775807)
    ORDER BY seq DESC
    LIMIT %(budget)s
) AS w
WHERE (%(statuses)s::text[] IS NULL OR w.status = ANY(%(statuses)s::text[]))
  AND (%(name)s::text IS NULL OR w.name = %(name)s::text)
  AND (%(queue_name)s::text IS NULL OR w.queue_name = %(queue_name)s::text)
  AND (%(id_prefix)s::text IS NULL OR starts_with(w.workflow_id, %(id_prefix)s::text))
  AND (%(dedup_id)s::text IS NULL OR w.dedup_id = %(dedup_id)s::text)
  AND (%(partition_key)s::text IS NULL OR w.partition_key = %(partition_key)s::text)
  AND (%(created_after)s::timestamptz IS NULL OR w.created_at >= %(created_after)s::timestamptz)
  AND (%(created_before)s::timestamptz IS NULL OR w.created_at < %(created_before)s::timestamptz)
ORDER BY w.seq DESC
LIMIT %(limit)s;

-- name: dashboard_workflow_by_id
-- The list's row of the workflow whose id is exactly %(id_prefix)s, through the primary key
-- whatever its age (the prefix walk above reaches back %(budget)s rows only), if the other
-- filters hold.
SELECT workflow_id, seq, name, status, queue_name, dedup_id, priority, partition_key,
       parent_workflow_id, executor_id, app_version, recovery_attempts, created_at,
       started_at, updated_at, completed_at
FROM {schema}.workflow_status
WHERE workflow_id = %(id_prefix)s::text
  AND (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s::text[]))
  AND (%(name)s::text IS NULL OR name = %(name)s::text)
  AND (%(queue_name)s::text IS NULL OR queue_name = %(queue_name)s::text)
  AND (%(dedup_id)s::text IS NULL OR dedup_id = %(dedup_id)s::text)
  AND (%(partition_key)s::text IS NULL OR partition_key = %(partition_key)s::text)
  AND (%(created_after)s::timestamptz IS NULL OR created_at >= %(created_after)s::timestamptz)
  AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s::timestamptz);

-- name: dashboard_scan_floor
-- Where a filtered page's bounded walk stopped: the seq %(budget)s rows below the cursor
-- (no row: the walk reached the oldest workflow).
SELECT seq
FROM {schema}.workflow_status
WHERE seq < coalesce(%(before)s::bigint, 9223372036854775807)
ORDER BY seq DESC
OFFSET %(budget)s - 1
LIMIT 1;

-- name: dashboard_events
-- A workflow's published events, by key.
SELECT key, serializer, value, updated_at
FROM {schema}.workflow_events
WHERE workflow_id = %(workflow_id)s
ORDER BY key;

-- name: dashboard_children
-- One level of a workflow's call graph: the children of the given workflows, through the
-- partial index on parent_workflow_id, at most %(limit)s of them (no ORDER BY, so the walk
-- stops at the limit however many children a workflow has; the page orders them).
SELECT workflow_id, seq, parent_workflow_id, name, status, created_at, updated_at
FROM {schema}.workflow_status
WHERE parent_workflow_id = ANY(%(parents)s::text[])
LIMIT %(limit)s;

-- name: dashboard_children_count
-- How many children the given workflows have, counted up to %(cap)s (the tree's "n more").
SELECT count(*) AS n FROM (
    SELECT 1 FROM {schema}.workflow_status
    WHERE parent_workflow_id = ANY(%(parents)s::text[])
    LIMIT %(cap)s
) AS c;
