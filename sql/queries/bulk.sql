-- Bulk cancel and resume by filter (pgflow/bulk.py): the rows are walked in seq order, a
-- batch per statement, each its own short transaction, so no lock is held for long.

-- name: bulk_bounds
-- Where a bulk action stops: the newest row now (work enqueued later is not touched) and the
-- creation cutoff of --older-than, both read once, on database time.
SELECT {schema}.clock() AS now,
       CASE WHEN %(older_than_s)s::float8 IS NULL THEN NULL
            ELSE {schema}.clock() - %(older_than_s)s::float8 * interval '1 second' END
           AS created_before,
       coalesce((SELECT max(seq) FROM {schema}.workflow_status), 0) AS max_seq;

-- name: count_matching
-- plan: scans
SELECT count(*) AS n FROM {schema}.workflow_status
WHERE seq <= %(max_seq)s
  AND status = ANY(%(statuses)s::text[])
  AND (%(queue_name)s::text IS NULL OR queue_name = %(queue_name)s)
  AND (%(name)s::text IS NULL OR name = %(name)s)
  AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s);

-- name: match_batch
-- The next `limit` matching workflows after seq `after_seq` (keyset: the walk of
-- workflow_status_seq goes on where the last batch stopped).
SELECT workflow_id, seq FROM {schema}.workflow_status
WHERE seq > %(after_seq)s AND seq <= %(max_seq)s
  AND status = ANY(%(statuses)s::text[])
  AND (%(queue_name)s::text IS NULL OR queue_name = %(queue_name)s)
  AND (%(name)s::text IS NULL OR name = %(name)s)
  AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s)
ORDER BY seq
LIMIT %(limit)s;

-- name: resume_workflows
-- resume_workflow for many ids in one statement: ended ones (CANCELLED, ERROR,
-- MAX_RECOVERY_ATTEMPTS_EXCEEDED) run again from their last completed step; ENQUEUED ones
-- lose their delay. One whose dedup id an active workflow of its queue holds now stays as it
-- is (as does all but the oldest of several sharing one), so the batch never fails on it.
WITH target AS (
    SELECT w.workflow_id FROM {schema}.workflow_status AS w
    WHERE w.workflow_id = ANY(%(workflow_ids)s::text[])
      AND w.status IN ('CANCELLED', 'ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
      AND (w.dedup_id IS NULL OR (
          NOT EXISTS (SELECT 1 FROM {schema}.workflow_status AS a
                      WHERE a.queue_name = w.queue_name AND a.dedup_id = w.dedup_id
                        AND a.status IN ('ENQUEUED', 'PENDING'))
          AND NOT EXISTS (SELECT 1 FROM {schema}.workflow_status AS o
                          WHERE o.workflow_id = ANY(%(workflow_ids)s::text[])
                            AND o.queue_name = w.queue_name AND o.dedup_id = w.dedup_id
                            AND o.status IN ('CANCELLED', 'ERROR',
                                             'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
                            AND o.seq < w.seq)))
    FOR UPDATE OF w SKIP LOCKED
), forgotten AS (
    DELETE FROM {schema}.operation_outputs AS o
    USING target
    WHERE o.workflow_id = target.workflow_id AND o.error IS NOT NULL
      AND o.step_id > coalesce((SELECT max(k.step_id) FROM {schema}.operation_outputs AS k
                                WHERE k.workflow_id = target.workflow_id
                                  AND k.error IS NULL), 0)
), resumed AS (
    UPDATE {schema}.workflow_status AS w
    SET status = CASE WHEN w.queue_name IS NULL THEN 'PENDING' ELSE 'ENQUEUED' END,
        executor_id = NULL, attempt = w.attempt + 1, fence = NULL, recovery_attempts = 0,
        output = NULL,
        error = NULL, deadline = NULL, not_before = NULL, completed_at = NULL,
        updated_at = {schema}.clock()
    FROM target WHERE w.workflow_id = target.workflow_id
    RETURNING w.queue_name
), woken AS (
    UPDATE {schema}.workflow_status AS w
    SET not_before = NULL, updated_at = {schema}.clock()
    WHERE w.workflow_id = ANY(%(workflow_ids)s::text[]) AND w.status = 'ENQUEUED'
      AND w.not_before IS NOT NULL
    RETURNING w.queue_name
)
SELECT (SELECT count(*) FROM resumed) AS resumed, (SELECT count(*) FROM woken) AS woken,
       (SELECT count(pg_notify(%(channel)s, q)) FROM (
            SELECT DISTINCT coalesce(queue_name, '') AS q
            FROM (SELECT queue_name FROM resumed UNION ALL SELECT queue_name FROM woken) AS u
        ) AS d) AS notified;
