-- pgflow schema, version 14: the trace context a workflow carries from its enqueuer.
--
-- With OpenTelemetry (pgflow/tracing.py), an enqueue or a start made while a span is active
-- stores that span's context here, as the global propagator writes it (a JSON object: W3C
-- `traceparent` and `tracestate` by default), and the run's `pgflow.workflow` span is its child,
-- in whichever process claims or adopts it. NULL otherwise (always without OpenTelemetry). A
-- nullable column without a default: adding it rewrites nothing.
ALTER TABLE {schema}.workflow_status ADD COLUMN trace_context text;

-- The claims of version 14: those of 0007 (claim_limited_v2, claim_partitions_v2), unchanged
-- but for one more column returned, the row's trace_context. Returning it from the claim's own
-- UPDATE costs the claim nothing (a NULL column; no second look at the rows). The v2 functions
-- stay for workers of versions 7 to 12 while they drain.
CREATE FUNCTION {schema}.claim_limited_v3(
    p_executor_id text, p_queue_name text, p_app_version text, p_names text[],
    p_limit integer, p_concurrency integer, p_rate_limit integer, p_per_s double precision,
    p_lock_name text, p_strict boolean)
RETURNS TABLE (workflow_id text, name text, serializer text, inputs text, attempt integer,
               recovery_attempts integer, deadline timestamptz, forked_from text,
               queue_name text, max_recovery_attempts integer, db_now timestamptz, fence uuid,
               trace_context text)
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    IF p_lock_name IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_lock_name, 0));
    END IF;
    RETURN QUERY
    WITH clock AS MATERIALIZED (
        SELECT {schema}.clock_now() AS now
    ), alive AS (
        -- Only a live executor claims: a reaped one (its row gone) gets nothing, and the lock
        -- makes a concurrent reaping wait for this claim, then release what it took.
        SELECT 1 FROM {schema}.executors e WHERE e.executor_id = p_executor_id FOR KEY SHARE
    ), room AS (
        SELECT greatest(0, least(
            p_limit,
            p_concurrency - (
                SELECT count(*) FROM {schema}.workflow_status r
                WHERE r.queue_name = p_queue_name AND r.status = 'PENDING'),
            p_rate_limit - CASE WHEN p_rate_limit IS NULL THEN 0 ELSE (
                SELECT count(*) FROM {schema}.workflow_status r
                WHERE r.queue_name = p_queue_name
                  AND r.started_at > (SELECT clock.now FROM clock)
                                     - p_per_s * interval '1 second') END
        )) AS n
    ), picked AS (
        SELECT c.workflow_id FROM {schema}.workflow_status c
        WHERE c.status = 'ENQUEUED' AND c.queue_name = p_queue_name
          AND (c.app_version = p_app_version OR c.app_version IS NULL
               OR (NOT p_strict AND c.started_at IS NULL AND c.forked_from IS NULL))
          AND (c.not_before IS NULL OR c.not_before <= (SELECT clock.now FROM clock))
          AND c.name = ANY(p_names)
          AND EXISTS (SELECT 1 FROM alive)
        ORDER BY c.priority, c.seq
        LIMIT (SELECT n FROM room)
        FOR UPDATE SKIP LOCKED
    )
    UPDATE {schema}.workflow_status AS w
    SET status = 'PENDING', executor_id = p_executor_id, attempt = w.attempt + 1,
        fence = gen_random_uuid(), app_version = p_app_version,
        started_at = t.now, updated_at = t.now,
        deadline = {schema}.claim_deadline(t.now, w.deadline, w.timeout_ms)
    FROM clock t
    -- ANY(ARRAY(...)) keeps the plan an index lookup of the picked ids whatever a cached
    -- generic plan estimates (a join here can turn into a scan of the whole table).
    WHERE w.workflow_id = ANY(ARRAY(SELECT p.workflow_id FROM picked p))
    RETURNING w.workflow_id, w.name, w.serializer, w.inputs, w.attempt, w.recovery_attempts,
              w.deadline, w.forked_from, w.queue_name, w.max_recovery_attempts, t.now, w.fence,
              w.trace_context;
END
$$;

-- The same for a partitioned queue, every key in one statement; limits hold per key.
-- keys: the partition keys with ENQUEUED rows, found by skipping through the partial index
-- (one index descent per key, not a scan of the backlog). room: what each key may still
-- start. Each open key offers its first rows (at most its room, and its fair share of p_limit);
-- the claim takes them round robin - every key's first row, then every key's second... -
-- starting from the key p_rotation points at, so no key always goes first.
CREATE FUNCTION {schema}.claim_partitions_v3(
    p_executor_id text, p_queue_name text, p_app_version text, p_names text[],
    p_limit integer, p_concurrency integer, p_rate_limit integer, p_per_s double precision,
    p_rotation bigint, p_lock_name text, p_strict boolean, p_worker_concurrency integer)
RETURNS TABLE (workflow_id text, name text, serializer text, inputs text, attempt integer,
               recovery_attempts integer, deadline timestamptz, forked_from text,
               queue_name text, max_recovery_attempts integer, db_now timestamptz, fence uuid,
               trace_context text)
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    IF p_lock_name IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_lock_name, 0));
    END IF;
    RETURN QUERY
    WITH RECURSIVE clock AS MATERIALIZED (
        SELECT {schema}.clock_now() AS now
    ), keys AS (
        (SELECT s.partition_key AS k FROM {schema}.workflow_status s
         WHERE s.status = 'ENQUEUED' AND s.queue_name = p_queue_name
           AND s.partition_key IS NOT NULL
         ORDER BY s.partition_key LIMIT 1)
        UNION ALL
        SELECT (SELECT s.partition_key FROM {schema}.workflow_status s
                WHERE s.status = 'ENQUEUED' AND s.queue_name = p_queue_name
                  AND s.partition_key > keys.k
                ORDER BY s.partition_key LIMIT 1)
        FROM keys WHERE keys.k IS NOT NULL
    ), alive AS (
        SELECT 1 FROM {schema}.executors e WHERE e.executor_id = p_executor_id FOR KEY SHARE
    ), room AS (
        SELECT keys.k, greatest(0, least(
            p_limit,
            p_concurrency - (
                SELECT count(*) FROM {schema}.workflow_status r
                WHERE r.queue_name = p_queue_name AND r.partition_key = keys.k
                  AND r.status = 'PENDING'),
            p_worker_concurrency - (
                SELECT count(*) FROM {schema}.workflow_status r
                WHERE r.queue_name = p_queue_name AND r.partition_key = keys.k
                  AND r.status = 'PENDING' AND r.executor_id = p_executor_id),
            p_rate_limit - CASE WHEN p_rate_limit IS NULL THEN 0 ELSE (
                SELECT count(*) FROM {schema}.workflow_status r
                WHERE r.queue_name = p_queue_name AND r.partition_key = keys.k
                  AND r.started_at > (SELECT clock.now FROM clock)
                                     - p_per_s * interval '1 second') END
        )) AS n
        FROM keys WHERE keys.k IS NOT NULL
    ), opened AS (
        SELECT room.k, room.n, row_number() OVER (ORDER BY room.k) - 1 AS ord,
               count(*) OVER () AS nkeys
        FROM room WHERE room.n > 0
    ), offered AS (
        SELECT c.workflow_id, o.ord, o.nkeys,
               row_number() OVER (PARTITION BY o.k ORDER BY c.priority, c.seq) AS rank
        FROM opened o CROSS JOIN LATERAL (
            SELECT s.workflow_id, s.priority, s.seq FROM {schema}.workflow_status s
            WHERE s.status = 'ENQUEUED' AND s.queue_name = p_queue_name
              AND s.partition_key = o.k
              AND (s.app_version = p_app_version OR s.app_version IS NULL
                   OR (NOT p_strict AND s.started_at IS NULL AND s.forked_from IS NULL))
              AND (s.not_before IS NULL OR s.not_before <= (SELECT clock.now FROM clock))
              AND s.name = ANY(p_names)
              AND EXISTS (SELECT 1 FROM alive)
            ORDER BY s.priority, s.seq
            LIMIT least(o.n, ceil(p_limit::numeric / o.nkeys))
            FOR UPDATE SKIP LOCKED
        ) c
    ), picked AS (
        SELECT f.workflow_id FROM offered f
        ORDER BY f.rank, (f.ord + f.nkeys - p_rotation % f.nkeys) % f.nkeys
        LIMIT p_limit
    )
    UPDATE {schema}.workflow_status AS w
    SET status = 'PENDING', executor_id = p_executor_id, attempt = w.attempt + 1,
        fence = gen_random_uuid(), app_version = p_app_version,
        started_at = t.now, updated_at = t.now,
        deadline = {schema}.claim_deadline(t.now, w.deadline, w.timeout_ms)
    FROM clock t
    WHERE w.workflow_id = ANY(ARRAY(SELECT p.workflow_id FROM picked p))
    RETURNING w.workflow_id, w.name, w.serializer, w.inputs, w.attempt, w.recovery_attempts,
              w.deadline, w.forked_from, w.queue_name, w.max_recovery_attempts, t.now, w.fence,
              w.trace_context;
END
$$;
