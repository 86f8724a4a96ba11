-- What a workflow waits for, recorded on its row for `pgflow explain` and the dashboard
-- (migration 0013). Only a recv that has to wait writes these: its fast path (the message is
-- already there) does not.

-- name: record_recv_wait
-- A recv found no message and starts waiting: its step, topic, since and until (its timeout),
-- on the database's clock. Fenced, as every write of a run: a stale run records nothing.
UPDATE {schema}.workflow_status
SET wait_step = %(step_id)s, wait_topic = %(topic)s, wait_since = {schema}.clock(),
    wait_until = {schema}.clock() + %(timeout_s)s::float8 * interval '1 second'
WHERE workflow_id = %(workflow_id)s AND fence = %(fence)s AND status = 'PENDING';

-- name: clear_recv_wait
-- The wait is over: run in the transaction that takes the message (or records the timeout)
-- and checkpoints the recv.
UPDATE {schema}.workflow_status
SET wait_step = NULL, wait_topic = NULL, wait_since = NULL, wait_until = NULL
WHERE workflow_id = %(workflow_id)s AND wait_step IS NOT NULL;
