-- name: send_message
-- Store a message for a workflow and wake its recv (NOTIFY is delivered at commit). No row
-- when no workflow has the destination id (the caller raises UnknownWorkflow).
WITH ins AS (
    INSERT INTO {schema}.notifications (destination_id, topic, serializer, message)
    SELECT %(destination_id)s, %(topic)s, %(serializer)s, %(message)s
    WHERE EXISTS (SELECT 1 FROM {schema}.workflow_status
                  WHERE workflow_id = %(destination_id)s)
    RETURNING message_id
)
SELECT message_id, pg_notify(%(channel)s, %(destination_id)s) FROM ins;

-- name: consume_message
-- Take the oldest message of a destination and topic. Run in the transaction that writes the
-- recv checkpoint: a rollback (or a crash before commit) leaves the message where it was.
WITH picked AS (
    SELECT message_id FROM {schema}.notifications
    WHERE destination_id = %(destination_id)s AND topic = %(topic)s
    ORDER BY message_id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {schema}.notifications AS n
USING picked WHERE n.message_id = picked.message_id
RETURNING n.message_id, n.serializer, n.message;

-- name: recorded_output
-- One checkpoint with its output (to learn whether a write whose reply was lost landed).
SELECT name, output, error, executor_id, fence FROM {schema}.operation_outputs
WHERE workflow_id = %(workflow_id)s AND step_id = %(step_id)s;

-- name: set_event
-- Publish the latest value of a workflow's key and wake its readers (NOTIFY at commit); the
-- history row (by step) is what a fork copies.
WITH up AS (
    INSERT INTO {schema}.workflow_events (workflow_id, key, serializer, value)
    VALUES (%(workflow_id)s, %(key)s, %(serializer)s, %(value)s)
    ON CONFLICT (workflow_id, key) DO UPDATE
        SET serializer = EXCLUDED.serializer, value = EXCLUDED.value, updated_at = {schema}.clock()
    RETURNING workflow_id
), history AS (
    INSERT INTO {schema}.workflow_event_history (workflow_id, step_id, key, serializer, value)
    VALUES (%(workflow_id)s, %(step_id)s, %(key)s, %(serializer)s, %(value)s)
    ON CONFLICT (workflow_id, step_id) DO UPDATE
        SET key = EXCLUDED.key, serializer = EXCLUDED.serializer, value = EXCLUDED.value
)
SELECT workflow_id, pg_notify(%(channel)s, %(workflow_id)s) FROM up;

-- name: get_event
SELECT serializer, value FROM {schema}.workflow_events
WHERE workflow_id = %(workflow_id)s AND key = %(key)s;

-- name: park_workflow
-- A queued workflow going to sleep for long gives its thread back: back to its queue, to be
-- claimed again at its wake-up time. Fenced: only the run holding its fence may park it.
UPDATE {schema}.workflow_status
SET status = 'ENQUEUED', executor_id = NULL, fence = NULL, updated_at = {schema}.clock(),
    not_before = {schema}.clock() + %(seconds)s::float8 * interval '1 second'
WHERE workflow_id = %(workflow_id)s AND fence = %(fence)s AND status = 'PENDING'
RETURNING workflow_id;
