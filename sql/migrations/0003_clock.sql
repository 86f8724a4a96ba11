-- pgflow schema, version 3: the database clock.
--
-- Every time-based decision (delays, rate windows, heartbeats, deadlines) reads {schema}.clock()
-- instead of now(), so tests can move database time for one application's connections with
-- the session setting pgflow.clock_offset (seconds; pgflow.testing.Clock sets it). Unset, the
-- offset is 0 and clock() is statement_timestamp().
--
-- statement_timestamp(), not now(): a claim waits for the queue's lock inside its transaction,
-- and the start it records must come after the finish that freed its slot, or the recorded
-- [started_at, completed_at] intervals would overlap where the running ones never did.
--
-- A one-expression STABLE SQL function is inlined by the planner: the call costs what the
-- expression costs, and it is evaluated once per statement, not per row.
CREATE OR REPLACE FUNCTION {schema}.clock() RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT statement_timestamp()
        + coalesce(nullif(current_setting('pgflow.clock_offset', true), ''), '0')::float8
          * interval '1 second'
$$;

-- Rows written without an explicit time take it from the same clock.
ALTER TABLE {schema}.workflow_status
    ALTER COLUMN created_at SET DEFAULT {schema}.clock(),
    ALTER COLUMN updated_at SET DEFAULT {schema}.clock();
ALTER TABLE {schema}.executors
    ALTER COLUMN started_at SET DEFAULT {schema}.clock(),
    ALTER COLUMN heartbeat_at SET DEFAULT {schema}.clock();
ALTER TABLE {schema}.operation_outputs
    ALTER COLUMN completed_at SET DEFAULT {schema}.clock();
