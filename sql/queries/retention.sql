-- Retention (pgflow/retention.py): delete finished workflows with everything recorded for
-- them, in batches, each its own short transaction.

-- name: prune_bounds
-- The cutoff, on database time, and the first row created after it: the walk stops there, so
-- a pass reads only the rows older than the cutoff (after the first pass, those kept).
SELECT {schema}.clock() - %(older_than_s)s::float8 * interval '1 second' AS cutoff,
       coalesce((SELECT seq FROM {schema}.workflow_status
                 WHERE created_at >= {schema}.clock() - %(older_than_s)s::float8
                                      * interval '1 second'
                 ORDER BY seq LIMIT 1),
                (SELECT max(seq) + 1 FROM {schema}.workflow_status), 0) AS below_seq;

-- name: count_prunable
-- plan: scans
-- What prune_batch would delete (see there).
SELECT count(*) AS n FROM {schema}.workflow_status AS w
WHERE w.seq < %(below_seq)s
  AND w.status = ANY(%(statuses)s::text[])
  AND coalesce(w.completed_at, w.updated_at) < %(cutoff)s
  AND (w.parent_workflow_id IS NULL OR NOT EXISTS (
      SELECT 1 FROM {schema}.workflow_status AS p
      WHERE p.workflow_id = w.parent_workflow_id
        AND NOT (p.status = ANY(%(statuses)s::text[])
                 AND coalesce(p.completed_at, p.updated_at) < %(cutoff)s)));

-- name: prune_batch
-- Up to `limit` workflows after seq `after_seq` that ended (in `statuses`, all terminal)
-- before the cutoff, with their checkpoints, the messages sent to them and their events. A
-- child stays as long as its parent stays: a parent's replay (after a resume, or still
-- running) reads its children's outcomes from their rows. Rows someone holds are skipped
-- (the next pass takes them).
WITH picked AS (
    SELECT w.workflow_id, w.seq FROM {schema}.workflow_status AS w
    WHERE w.seq > %(after_seq)s AND w.seq < %(below_seq)s
      AND w.status = ANY(%(statuses)s::text[])
      AND coalesce(w.completed_at, w.updated_at) < %(cutoff)s
      AND (w.parent_workflow_id IS NULL OR NOT EXISTS (
          SELECT 1 FROM {schema}.workflow_status AS p
          WHERE p.workflow_id = w.parent_workflow_id
            AND NOT (p.status = ANY(%(statuses)s::text[])
                     AND coalesce(p.completed_at, p.updated_at) < %(cutoff)s)))
    ORDER BY w.seq
    LIMIT %(limit)s
    FOR UPDATE OF w SKIP LOCKED
), steps AS (
    DELETE FROM {schema}.operation_outputs AS o USING picked
    WHERE o.workflow_id = picked.workflow_id RETURNING 1
), messages AS (
    DELETE FROM {schema}.notifications AS n USING picked
    WHERE n.destination_id = picked.workflow_id RETURNING 1
), events AS (
    DELETE FROM {schema}.workflow_events AS e USING picked
    WHERE e.workflow_id = picked.workflow_id RETURNING 1
), history AS (
    DELETE FROM {schema}.workflow_event_history AS h USING picked
    WHERE h.workflow_id = picked.workflow_id RETURNING 1
), gone AS (
    DELETE FROM {schema}.workflow_status AS w USING picked
    WHERE w.workflow_id = picked.workflow_id RETURNING 1
)
SELECT (SELECT count(*) FROM picked) AS picked,
       coalesce((SELECT max(seq) FROM picked), 0) AS last_seq,
       (SELECT count(*) FROM gone) AS workflows, (SELECT count(*) FROM steps) AS steps,
       (SELECT count(*) FROM messages) AS messages,
       (SELECT count(*) FROM events) + (SELECT count(*) FROM history) AS events;

-- name: retention_try_lock
-- One pruner in the whole cluster at a time (a session lock, released by retention_unlock
-- or with the session).
SELECT pg_try_advisory_lock(hashtextextended(%(lock_name)s, 0)) AS locked;

-- name: retention_unlock
SELECT pg_advisory_unlock(hashtextextended(%(lock_name)s, 0)) AS unlocked;
