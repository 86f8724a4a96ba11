-- name: claim_workflows
-- Take up to `limit` eligible ENQUEUED rows of a queue, in priority then FIFO order.
-- Time is {schema}.clock() (database time a test may move); in a WHERE clause it is read as
-- (SELECT {schema}.clock()), computed once per statement rather than once per scanned row.
WITH alive AS (
    -- Only a live executor claims: a reaped one (its row gone) gets nothing, and the lock
    -- makes a concurrent reaping wait for this claim, then release what it took.
    SELECT 1 FROM {schema}.executors WHERE executor_id = %(executor_id)s
      -- The claim's commit does not wait for its WAL flush (see "Claims commit
      -- asynchronously" in the README): every durable write that follows it flushes it.
      AND set_config('synchronous_commit', 'off', true) = 'off'
    FOR KEY SHARE
), picked AS (
    SELECT workflow_id FROM {schema}.workflow_status
    WHERE status = 'ENQUEUED' AND queue_name = %(queue_name)s
      -- Any version may start a row that never started (unless strict); started rows run
      -- only on their own version (see 0007, claim_limited_v2).
      AND (app_version = %(app_version)s OR app_version IS NULL
           OR (NOT %(strict)s AND started_at IS NULL AND forked_from IS NULL))
      AND (not_before IS NULL OR not_before <= (SELECT {schema}.clock()))
      AND name = ANY(%(names)b::text[])
      AND EXISTS (SELECT 1 FROM alive)
    ORDER BY priority, seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.workflow_status AS w
SET status = 'PENDING', executor_id = %(executor_id)s, attempt = w.attempt + 1,
    fence = gen_random_uuid(), app_version = %(app_version)s,
    started_at = {schema}.clock(), updated_at = {schema}.clock(),
    -- Clamped (0007): no stored timeout or deadline can make the claim fail.
    deadline = {schema}.claim_deadline({schema}.clock(), w.deadline, w.timeout_ms)
-- ANY(ARRAY(...)) keeps the plan an index lookup of the picked ids whatever a cached generic
-- plan estimates (a join here can turn into a scan of the whole table).
WHERE w.workflow_id = ANY(ARRAY(SELECT workflow_id FROM picked))
RETURNING w.workflow_id, w.name, w.serializer, w.inputs, w.attempt, w.recovery_attempts,
          w.deadline, w.forked_from, w.queue_name, w.max_recovery_attempts, {schema}.clock() AS db_now,
          w.fence, w.trace_context;

-- name: claim_limited
-- claim_workflows for a queue with a global concurrency and/or rate limit: the queue's lock
-- (lock_name) and a claim that counts the room left, in one server-side function (0005; v3 from
-- 0014 also returns the row's trace_context).
SELECT * FROM {schema}.claim_limited_v3(
    %(executor_id)s, %(queue_name)s, %(app_version)s, %(names)b::text[], %(limit)s,
    %(concurrency)s, %(rate_limit)s, %(per_s)s, %(lock_name)s, %(strict)s);

-- name: claim_partitions
-- claim_workflows for a partitioned queue: every key in one statement, limits per key, rows
-- taken round robin from the key `rotation` points at (0005; v3: 0014); lock_name NULL when
-- unlimited.
SELECT * FROM {schema}.claim_partitions_v3(
    %(executor_id)s, %(queue_name)s, %(app_version)s, %(names)b::text[], %(limit)s,
    %(concurrency)s, %(rate_limit)s, %(per_s)s, %(rotation)s, %(lock_name)s, %(strict)s,
    %(worker_concurrency)s);

-- name: declare_queue
INSERT INTO {schema}.queues (name, concurrency, worker_concurrency, rate_limit,
                             rate_per_seconds, priority_enabled, partitioned, strict_versions)
VALUES (%(name)s, %(concurrency)s, %(worker_concurrency)s, %(rate_limit)s, %(rate_per_seconds)s,
        %(priority_enabled)s, %(partitioned)s, %(strict_versions)s)
ON CONFLICT (name) DO UPDATE SET
    concurrency = EXCLUDED.concurrency, worker_concurrency = EXCLUDED.worker_concurrency,
    rate_limit = EXCLUDED.rate_limit, rate_per_seconds = EXCLUDED.rate_per_seconds,
    priority_enabled = EXCLUDED.priority_enabled, partitioned = EXCLUDED.partitioned,
    strict_versions = EXCLUDED.strict_versions, updated_at = now();

-- name: work_left
-- plan: scans
-- What the given queues still hold that this version could run (for --burst): a workflow
-- name this worker does not know is not work it could ever do (names NULL: count every name).
-- `delayed` of the enqueued may not start before `next_due` (a delay, or a durable sleep).
SELECT
    count(*) FILTER (WHERE status = 'ENQUEUED') AS enqueued,
    count(*) FILTER (WHERE status = 'PENDING') AS pending,
    count(*) FILTER (WHERE status = 'ENQUEUED' AND not_before > {schema}.clock()) AS delayed,
    min(not_before) FILTER (WHERE status = 'ENQUEUED' AND not_before > {schema}.clock())
        AS next_due,
    {schema}.clock() AS now
FROM {schema}.workflow_status
WHERE status IN ('ENQUEUED', 'PENDING')
  -- What this version could start: its own rows, and rows that never started (see claims).
  AND (app_version = %(app_version)s OR app_version IS NULL
       OR (NOT %(strict)s AND status = 'ENQUEUED' AND started_at IS NULL
           AND forked_from IS NULL))
  AND (%(names)s::text[] IS NULL OR name = ANY(%(names)s::text[]))
  AND (queue_name = ANY(%(queues)s::text[])
       OR (queue_name IS NULL AND executor_id IS NULL));

-- name: queue_progress
-- plan: scans
-- Totals of the given queues since a point in time, for the burst progress line.
SELECT
    count(*) FILTER (WHERE status = 'SUCCESS' AND completed_at >= %(since)s) AS done,
    count(*) FILTER (WHERE status IN ('ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
                     AND completed_at >= %(since)s) AS failed,
    count(*) FILTER (WHERE status IN ('ENQUEUED', 'PENDING')) AS left_
FROM {schema}.workflow_status
WHERE queue_name = ANY(%(queues)s::text[])
  AND (status IN ('ENQUEUED', 'PENDING') OR completed_at >= %(since)s);

-- name: listen
LISTEN {channel};

-- name: set_queue_paused
-- Pause or resume a queue (a queue no worker declared yet is created, paused); the NOTIFY wakes
-- the workers to read the paused queues at once. Returns whether it changed.
WITH before AS (
    SELECT paused FROM {schema}.queues WHERE name = %(name)s
), up AS (
    INSERT INTO {schema}.queues AS q (name, paused, paused_at)
    VALUES (%(name)s, %(paused)s, CASE WHEN %(paused)s THEN {schema}.clock() END)
    ON CONFLICT (name) DO UPDATE
        SET paused = EXCLUDED.paused,
            paused_at = CASE WHEN EXCLUDED.paused THEN coalesce(q.paused_at, EXCLUDED.paused_at)
                        END
    RETURNING q.name
)
SELECT coalesce((SELECT paused FROM before), false) IS DISTINCT FROM %(paused)s AS changed,
       pg_notify(%(channel)s, %(name)s) IS NULL AS woke
FROM up;

-- name: paused_queues
SELECT name, paused_at FROM {schema}.queues WHERE paused;
