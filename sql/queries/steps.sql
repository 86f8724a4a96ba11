-- name: record_step
-- A step's checkpoint, written only while this run still owns the workflow (fencing: the row
-- carries the fence its claim drew): FOR SHARE makes a concurrent adoption wait for this
-- commit, or this insert see the adoption. The checkpoint keeps the fence of the run that
-- wrote it. Row count 1: written; 0: not the owner any more, or a checkpoint of that step
-- exists.
-- after_body: the checkpoint of a step body that has run. A cancel is not a loss of
-- ownership (it keeps the fence; resume clears it): that checkpoint is kept, so a resumed
-- workflow never runs the body again.
WITH owner AS (
    SELECT 1 FROM {schema}.workflow_status
    WHERE workflow_id = %(workflow_id)s AND fence = %(fence)s
      AND (status = 'PENDING' OR (%(after_body)s AND status = 'CANCELLED'))
    FOR SHARE
)
INSERT INTO {schema}.operation_outputs (
    workflow_id, step_id, name, output, error, child_workflow_id, executor_id, started_at,
    fence, attempts)
SELECT %(workflow_id)s, %(step_id)s, %(name)s, %(output)s, %(error)s, %(child_workflow_id)s,
       %(executor_id)s, %(started_at)s, %(fence)s, %(attempts)s
FROM owner
ON CONFLICT (workflow_id, step_id) DO NOTHING;

-- name: list_steps
SELECT step_id, name, output, error, child_workflow_id, started_at, completed_at, attempts
FROM {schema}.operation_outputs
WHERE workflow_id = %(workflow_id)s
ORDER BY step_id;

-- name: get_step
SELECT step_id, name, executor_id, fence FROM {schema}.operation_outputs
WHERE workflow_id = %(workflow_id)s AND step_id = %(step_id)s;

-- name: allow_scans
-- pgflow's sessions run with enable_seqscan and jit off (pgflow/db/pool.py). This puts the
-- defaults back for one transaction: before a statement marked `-- plan: scans`, and first in
-- a transaction step, so that the user's SQL plans as it would anywhere else.
SELECT set_config('enable_seqscan', 'on', true), set_config('jit', 'on', true);

-- name: limit_statements
-- A transaction step's time_limit: the server cancels any statement of this transaction that
-- runs longer. Returns the setting it replaces (put back before the checkpoint is written).
WITH s AS MATERIALIZED (SELECT current_setting('statement_timeout') AS previous)
SELECT s.previous, set_config('statement_timeout', %(timeout)s, true) FROM s;

-- name: restore_statement_timeout
SELECT set_config('statement_timeout', %(timeout)s, true);
