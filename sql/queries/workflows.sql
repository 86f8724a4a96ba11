-- name: insert_workflow
-- Start a workflow owned by this executor (attempt 1, under the fence the caller drew), or
-- find the one already using the id.
-- An executor that was reaped meanwhile starts it ownerless (any live executor adopts it),
-- never under its dead id, which nobody would ever recover.
WITH alive AS (
    SELECT executor_id FROM {schema}.executors
    WHERE executor_id = %(executor_id)s FOR KEY SHARE
)
INSERT INTO {schema}.workflow_status AS w (
    workflow_id, name, status, queue_name, dedup_id, priority, partition_key,
    parent_workflow_id, executor_id, attempt, app_version, max_recovery_attempts, serializer,
    inputs, timeout_ms, deadline, started_at, forked_from, fence, trace_context)
VALUES (
    %(workflow_id)s, %(name)s, 'PENDING', NULL, NULL, 0, NULL,
    %(parent_workflow_id)s, (SELECT executor_id FROM alive), 1, %(app_version)s,
    %(max_recovery_attempts)s,
    %(serializer)s, %(inputs)s, %(timeout_ms)s,
    {schema}.claim_deadline({schema}.clock(), %(deadline)s::timestamptz,
                            %(timeout_ms)s::bigint),
    {schema}.clock(), NULL,
    CASE WHEN EXISTS (SELECT 1 FROM alive) THEN %(fence)s::uuid END, %(trace_context)s)
ON CONFLICT (workflow_id) DO NOTHING
RETURNING workflow_id, attempt, deadline, {schema}.clock() AS db_now,
          executor_id IS NOT NULL AS owned;

-- name: enqueue_workflow
-- Queue one workflow and wake the workers (NOTIFY is delivered at commit).
WITH ins AS (
    INSERT INTO {schema}.workflow_status (
        workflow_id, name, status, queue_name, dedup_id, priority, partition_key,
        parent_workflow_id, app_version, max_recovery_attempts, serializer, inputs, timeout_ms,
        deadline, not_before, trace_context)
    VALUES (
        %(workflow_id)s, %(name)s, 'ENQUEUED', %(queue_name)s, %(dedup_id)s, %(priority)s,
        %(partition_key)s, %(parent_workflow_id)s, %(app_version)s, %(max_recovery_attempts)s,
        %(serializer)s, %(inputs)s, %(timeout_ms)s, %(deadline)s,
        CASE WHEN %(delay_ms)s::bigint > 0
             THEN {schema}.clock() + %(delay_ms)s::bigint * interval '1 millisecond' END,
        -- The enqueuer's trace context (pgflow/tracing.py), NULL unless a span was active.
        %(trace_context)s)
    ON CONFLICT (workflow_id) DO NOTHING
    RETURNING workflow_id
)
SELECT workflow_id, pg_notify(%(channel)s, %(queue_name)s) FROM ins;

-- name: enqueue_workflows
-- Queue many workflows of one queue in one statement, skipping ids already taken: the ticks of
-- a schedule, which several processes may insert at once. Only the ids and the inputs differ
-- from row to row (a batch has one priority and one partition key, and no deduplication id),
-- so only they travel as arrays: each array element costs the client a conversion in Python.
WITH ins AS (
    INSERT INTO {schema}.workflow_status (
        workflow_id, name, status, queue_name, priority, partition_key,
        app_version, max_recovery_attempts, serializer, inputs, timeout_ms, not_before)
    SELECT i.workflow_id, %(name)s, 'ENQUEUED', %(queue_name)s, %(priority)s,
           %(partition_key)s, %(app_version)s, %(max_recovery_attempts)s, %(serializer)s,
           i.inputs, %(timeout_ms)s,
           CASE WHEN %(delay_ms)s::bigint > 0
                THEN {schema}.clock() + %(delay_ms)s::bigint * interval '1 millisecond' END
    -- Arrays travel in binary (%%b): no text escaping of hundreds of JSON documents.
    FROM unnest(%(workflow_ids)b::text[], %(inputs)b::text[]) AS i (workflow_id, inputs)
    ON CONFLICT (workflow_id) DO NOTHING
    RETURNING workflow_id
), woke AS (
    SELECT pg_notify(%(channel)s, %(queue_name)s) WHERE EXISTS (SELECT 1 FROM ins)
)
SELECT ins.workflow_id FROM ins LEFT JOIN woke ON true;

-- name: enqueue_batch
-- enqueue_many: the same rows under fresh ids, all or none. No ON CONFLICT: its speculative
-- insertion (an index probe and a confirmation record per row) cost 30%% of a 500-row
-- statement; a retry after a lost reply finds its ids taken (workflows.insert_batch).
WITH ins AS (
    INSERT INTO {schema}.workflow_status (
        workflow_id, name, status, queue_name, priority, partition_key,
        app_version, max_recovery_attempts, serializer, inputs, timeout_ms, not_before,
        trace_context)
    SELECT i.workflow_id, %(name)s, 'ENQUEUED', %(queue_name)s, %(priority)s,
           %(partition_key)s, %(app_version)s, %(max_recovery_attempts)s, %(serializer)s,
           i.inputs, %(timeout_ms)s,
           CASE WHEN %(delay_ms)s::bigint > 0
                THEN {schema}.clock() + %(delay_ms)s::bigint * interval '1 millisecond' END,
           %(trace_context)s
    FROM unnest(%(workflow_ids)b::text[], %(inputs)b::text[]) AS i (workflow_id, inputs)
)
SELECT pg_notify(%(channel)s, %(queue_name)s);

-- name: find_active_dedup
SELECT workflow_id FROM {schema}.workflow_status
WHERE queue_name = %(queue_name)s AND dedup_id = %(dedup_id)s
  AND status IN ('ENQUEUED', 'PENDING');

-- name: get_workflow
SELECT * FROM {schema}.workflow_status WHERE workflow_id = %(workflow_id)s;

-- name: get_workflow_outcome
SELECT status, serializer, output, error, max_recovery_attempts
FROM {schema}.workflow_status WHERE workflow_id = %(workflow_id)s;

-- name: list_workflows
-- Oldest first: a walk of workflow_status_seq that stops at the LIMIT.
SELECT * FROM {schema}.workflow_status
WHERE (%(status)s::text[] IS NULL OR status = ANY(%(status)s::text[]))
  AND (%(name)s::text IS NULL OR name = %(name)s)
  AND (%(queue_name)s::text IS NULL OR queue_name = %(queue_name)s)
  AND (%(created_after)s::timestamptz IS NULL OR created_at >= %(created_after)s)
  AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s)
  AND (%(parent_workflow_id)s::text IS NULL OR parent_workflow_id = %(parent_workflow_id)s)
ORDER BY seq
LIMIT %(limit)s OFFSET %(offset)s;

-- name: list_workflows_newest
-- The same, newest first.
SELECT * FROM {schema}.workflow_status
WHERE (%(status)s::text[] IS NULL OR status = ANY(%(status)s::text[]))
  AND (%(name)s::text IS NULL OR name = %(name)s)
  AND (%(queue_name)s::text IS NULL OR queue_name = %(queue_name)s)
  AND (%(created_after)s::timestamptz IS NULL OR created_at >= %(created_after)s)
  AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s)
  AND (%(parent_workflow_id)s::text IS NULL OR parent_workflow_id = %(parent_workflow_id)s)
ORDER BY seq DESC
LIMIT %(limit)s OFFSET %(offset)s;

-- name: finish_workflows
-- Final status of a batch of workflows, each fenced by its run's fence token, in one commit.
-- The batch's ids are looked up in the primary key, one probe each. The owner test is written
-- IS NOT DISTINCT FROM (the same test, as executor_id is never NULL here) so that no plan can
-- start from workflow_status_executor instead: with statistics older than a burst of work the
-- planner takes this executor's PENDING rows for one, and a nested loop over thousands of
-- them times the batch made each finish take most of a second.
-- The arrays are sent in binary (the b placeholders): psycopg builds a text-format array by
-- escaping each element in Python, which doubled the client CPU of a batch of 25.
UPDATE {schema}.workflow_status AS w
SET status = f.status, output = f.output, error = f.error,
    updated_at = {schema}.clock(), completed_at = {schema}.clock()
FROM unnest(%(workflow_ids)b::text[], %(fences)b::uuid[], %(statuses)b::text[],
            %(outputs)b::text[], %(errors)b::text[])
     AS f (workflow_id, fence, status, output, error)
WHERE w.workflow_id = f.workflow_id AND w.executor_id IS NOT DISTINCT FROM %(executor_id)s
  AND w.fence = f.fence AND w.status = 'PENDING'
RETURNING w.workflow_id;

-- name: owner_of
-- Who holds a workflow now (to explain a fenced write).
SELECT status, executor_id, attempt, fence FROM {schema}.workflow_status
WHERE workflow_id = %(workflow_id)s;

-- name: adopt_workflow
-- Take over one PENDING workflow that has no owner (its executor died or handed it back);
-- only a live executor adopts (see claim_workflows).
WITH alive AS (
    SELECT 1 FROM {schema}.executors WHERE executor_id = %(executor_id)s FOR KEY SHARE
)
UPDATE {schema}.workflow_status
SET executor_id = %(executor_id)s, attempt = attempt + 1, fence = gen_random_uuid(),
    updated_at = {schema}.clock(),
    started_at = coalesce(started_at, {schema}.clock()),
    deadline = {schema}.claim_deadline({schema}.clock(), deadline, timeout_ms)
WHERE workflow_id = %(workflow_id)s AND status = 'PENDING' AND executor_id IS NULL
  AND app_version = %(app_version)s AND EXISTS (SELECT 1 FROM alive)
RETURNING workflow_id, name, serializer, inputs, attempt, recovery_attempts, deadline,
          forked_from, queue_name, max_recovery_attempts, {schema}.clock() AS db_now, fence,
          trace_context;

-- name: adopt_orphans
-- Take over ownerless PENDING workflows of this version (many at once, SKIP LOCKED); only a
-- live executor adopts (see claim_workflows).
WITH alive AS (
    SELECT 1 FROM {schema}.executors WHERE executor_id = %(executor_id)s FOR KEY SHARE
), picked AS (
    SELECT workflow_id FROM {schema}.workflow_status
    WHERE status = 'PENDING' AND executor_id IS NULL AND app_version = %(app_version)s
      AND name = ANY(%(names)s::text[]) AND EXISTS (SELECT 1 FROM alive)
    ORDER BY seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.workflow_status AS w
SET executor_id = %(executor_id)s, attempt = w.attempt + 1, fence = gen_random_uuid(),
    updated_at = {schema}.clock(),
    started_at = coalesce(w.started_at, {schema}.clock()),
    deadline = {schema}.claim_deadline({schema}.clock(), w.deadline, w.timeout_ms)
-- ANY(ARRAY(...)) keeps the plan an index lookup of the picked ids whatever a cached generic
-- plan estimates (a join here can turn into a scan of the whole table).
WHERE w.workflow_id = ANY(ARRAY(SELECT workflow_id FROM picked))
RETURNING w.workflow_id, w.name, w.serializer, w.inputs, w.attempt, w.recovery_attempts,
          w.deadline, w.forked_from, w.queue_name, w.max_recovery_attempts, {schema}.clock() AS db_now,
          w.fence, w.trace_context;

-- name: workflow_name
-- The function recorded under an id (to tell a repeated start from a conflicting one).
SELECT name FROM {schema}.workflow_status WHERE workflow_id = %(workflow_id)s;
