-- name: lock_queue
-- Serialize claims of one queue (namespaced by schema) for one short transaction, so two
-- claimers never both see room under a global limit.
SELECT pg_advisory_xact_lock(hashtextextended(%(lock_name)s, 0));

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
      AND app_version = %(app_version)s
      AND (not_before IS NULL OR not_before <= (SELECT {schema}.clock()))
      AND name = ANY(%(names)s::text[])
      AND EXISTS (SELECT 1 FROM alive)
    ORDER BY priority, seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.workflow_status AS w
SET status = 'PENDING', executor_id = %(executor_id)s, attempt = w.attempt + 1,
    started_at = {schema}.clock(), updated_at = {schema}.clock(),
    deadline = least(w.deadline, {schema}.clock() + w.timeout_ms * interval '1 millisecond')
-- ANY(ARRAY(...)) keeps the plan an index lookup of the picked ids whatever a cached generic
-- plan estimates (a join here can turn into a scan of the whole table).
WHERE w.workflow_id = ANY(ARRAY(SELECT workflow_id FROM picked))
RETURNING w.workflow_id, w.name, w.serializer, w.inputs, w.attempt, w.recovery_attempts,
          w.deadline, w.forked_from, w.queue_name, w.max_recovery_attempts, {schema}.clock() AS db_now;

-- name: claim_limited
-- claim_workflows for a queue with a global concurrency and/or rate limit: the room left
-- (limit, then concurrency minus PENDING rows, then rate minus starts in the window) is
-- counted in the same statement. Run right after lock_queue in one transaction (one round
-- trip, pipelined): under READ COMMITTED this statement's snapshot is taken after the lock,
-- so it sees every claim committed by an earlier holder, and the limits hold exactly.
WITH alive AS (
    SELECT 1 FROM {schema}.executors WHERE executor_id = %(executor_id)s
      -- The claim's commit does not wait for its WAL flush (see "Claims commit
      -- asynchronously" in the README): every durable write that follows it flushes it.
      AND set_config('synchronous_commit', 'off', true) = 'off'
    FOR KEY SHARE
), room AS (
    SELECT greatest(0, least(
        %(limit)s::int,
        %(concurrency)s::int - (
            SELECT count(*) FROM {schema}.workflow_status
            WHERE queue_name = %(queue_name)s AND status = 'PENDING'),
        %(rate_limit)s::int - CASE WHEN %(rate_limit)s::int IS NULL THEN 0 ELSE (
            SELECT count(*) FROM {schema}.workflow_status
            WHERE queue_name = %(queue_name)s
              AND started_at > (SELECT {schema}.clock())
                               - %(per_s)s::float8 * interval '1 second') END
    )) AS n
), picked AS (
    SELECT workflow_id FROM {schema}.workflow_status
    WHERE status = 'ENQUEUED' AND queue_name = %(queue_name)s
      AND app_version = %(app_version)s
      AND (not_before IS NULL OR not_before <= (SELECT {schema}.clock()))
      AND name = ANY(%(names)s::text[])
      AND EXISTS (SELECT 1 FROM alive)
    ORDER BY priority, seq
    LIMIT (SELECT n FROM room)
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.workflow_status AS w
SET status = 'PENDING', executor_id = %(executor_id)s, attempt = w.attempt + 1,
    started_at = {schema}.clock(), updated_at = {schema}.clock(),
    deadline = least(w.deadline, {schema}.clock() + w.timeout_ms * interval '1 millisecond')
WHERE w.workflow_id = ANY(ARRAY(SELECT workflow_id FROM picked))
RETURNING w.workflow_id, w.name, w.serializer, w.inputs, w.attempt, w.recovery_attempts,
          w.deadline, w.forked_from, w.queue_name, w.max_recovery_attempts, {schema}.clock() AS db_now;

-- name: claim_partitions
-- claim_workflows for a partitioned queue, every key in one statement (limits hold per key;
-- after lock_queue when there are limits, as for claim_limited).
-- keys: the partition keys with ENQUEUED rows, found by skipping through the partial index
-- (one index descent per key, not a scan of the backlog). room: what each key may still
-- start. Each open key offers its first rows (at most its room, and its fair share of
-- `limit`); the claim takes them round robin - every key's first row, then every key's
-- second... - starting from the key `rotation` points at, so no key always goes first.
WITH RECURSIVE keys AS (
    (SELECT partition_key FROM {schema}.workflow_status
     WHERE status = 'ENQUEUED' AND queue_name = %(queue_name)s AND partition_key IS NOT NULL
     ORDER BY partition_key LIMIT 1)
    UNION ALL
    SELECT (SELECT w.partition_key FROM {schema}.workflow_status w
            WHERE w.status = 'ENQUEUED' AND w.queue_name = %(queue_name)s
              AND w.partition_key > k.partition_key
            ORDER BY w.partition_key LIMIT 1)
    FROM keys k WHERE k.partition_key IS NOT NULL
), alive AS (
    SELECT 1 FROM {schema}.executors WHERE executor_id = %(executor_id)s
      -- The claim's commit does not wait for its WAL flush (see "Claims commit
      -- asynchronously" in the README): every durable write that follows it flushes it.
      AND set_config('synchronous_commit', 'off', true) = 'off'
    FOR KEY SHARE
), room AS (
    SELECT k.partition_key, greatest(0, least(
        %(limit)s::int,
        %(concurrency)s::int - (
            SELECT count(*) FROM {schema}.workflow_status r
            WHERE r.queue_name = %(queue_name)s AND r.partition_key = k.partition_key
              AND r.status = 'PENDING'),
        %(rate_limit)s::int - CASE WHEN %(rate_limit)s::int IS NULL THEN 0 ELSE (
            SELECT count(*) FROM {schema}.workflow_status r
            WHERE r.queue_name = %(queue_name)s AND r.partition_key = k.partition_key
              AND r.started_at > (SELECT {schema}.clock())
                                 - %(per_s)s::float8 * interval '1 second') END
    )) AS n
    FROM keys k WHERE k.partition_key IS NOT NULL
), open AS (
    SELECT partition_key, n, row_number() OVER (ORDER BY partition_key) - 1 AS ord,
           count(*) OVER () AS keys
    FROM room WHERE n > 0
), offered AS (
    SELECT c.workflow_id, o.ord, o.keys,
           row_number() OVER (PARTITION BY o.partition_key ORDER BY c.priority, c.seq) AS rank
    FROM open o CROSS JOIN LATERAL (
        SELECT w.workflow_id, w.priority, w.seq FROM {schema}.workflow_status w
        WHERE w.status = 'ENQUEUED' AND w.queue_name = %(queue_name)s
          AND w.partition_key = o.partition_key AND w.app_version = %(app_version)s
          AND (w.not_before IS NULL OR w.not_before <= (SELECT {schema}.clock()))
          AND w.name = ANY(%(names)s::text[])
          AND EXISTS (SELECT 1 FROM alive)
        ORDER BY w.priority, w.seq
        LIMIT least(o.n, ceil(%(limit)s::numeric / o.keys))
        FOR UPDATE SKIP LOCKED
    ) c
), picked AS (
    SELECT workflow_id FROM offered
    ORDER BY rank, (ord + keys - %(rotation)s::bigint %% keys) %% keys
    LIMIT %(limit)s
)
UPDATE {schema}.workflow_status AS w
SET status = 'PENDING', executor_id = %(executor_id)s, attempt = w.attempt + 1,
    started_at = {schema}.clock(), updated_at = {schema}.clock(),
    deadline = least(w.deadline, {schema}.clock() + w.timeout_ms * interval '1 millisecond')
WHERE w.workflow_id = ANY(ARRAY(SELECT workflow_id FROM picked))
RETURNING w.workflow_id, w.name, w.serializer, w.inputs, w.attempt, w.recovery_attempts,
          w.deadline, w.forked_from, w.queue_name, w.max_recovery_attempts, {schema}.clock() AS db_now;

-- name: declare_queue
INSERT INTO {schema}.queues (name, concurrency, worker_concurrency, rate_limit,
                             rate_per_seconds, priority_enabled, partitioned)
VALUES (%(name)s, %(concurrency)s, %(worker_concurrency)s, %(rate_limit)s, %(rate_per_seconds)s,
        %(priority_enabled)s, %(partitioned)s)
ON CONFLICT (name) DO UPDATE SET
    concurrency = EXCLUDED.concurrency, worker_concurrency = EXCLUDED.worker_concurrency,
    rate_limit = EXCLUDED.rate_limit, rate_per_seconds = EXCLUDED.rate_per_seconds,
    priority_enabled = EXCLUDED.priority_enabled, partitioned = EXCLUDED.partitioned,
    updated_at = now();

-- name: work_left
-- What the given queues still hold that this version could run (for --burst): a workflow
-- name this worker does not know is not work it could ever do (names NULL: count every name).
SELECT
    count(*) FILTER (WHERE status = 'ENQUEUED') AS enqueued,
    count(*) FILTER (WHERE status = 'PENDING') AS pending
FROM {schema}.workflow_status
WHERE app_version = %(app_version)s AND status IN ('ENQUEUED', 'PENDING')
  AND (%(names)s::text[] IS NULL OR name = ANY(%(names)s::text[]))
  AND (queue_name = ANY(%(queues)s::text[])
       OR (queue_name IS NULL AND executor_id IS NULL));

-- name: queue_progress
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
