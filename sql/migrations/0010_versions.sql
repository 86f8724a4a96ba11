-- pgflow schema, version 10: the version registry, and claims across versions.
--
-- Every executor records its application version and the workflow names it knows when it
-- registers (register_executor), so that `pgflow versions` can list them after their
-- executors are gone, an enqueue by name can tell whether any version knows the name, and
-- reports can say why work is left. last_seen is written at registration and deregistration;
-- while executors live, their heartbeats say more (the listing takes the later of the two).
CREATE TABLE {schema}.versions (
    app_version     text PRIMARY KEY,
    workflow_names  text[] NOT NULL DEFAULT ARRAY[]::text[],
    first_seen      timestamptz NOT NULL DEFAULT {schema}.clock(),
    last_seen       timestamptz NOT NULL DEFAULT {schema}.clock()
);

-- Versions already at work when this migration runs.
INSERT INTO {schema}.versions (app_version, first_seen, last_seen)
SELECT app_version, min(started_at), max(heartbeat_at) FROM {schema}.executors
WHERE app_version IS NOT NULL GROUP BY app_version
ON CONFLICT DO NOTHING;

-- Whether the workers of a queue take only rows of their own version (as last declared).
ALTER TABLE {schema}.queues ADD COLUMN strict_versions boolean NOT NULL DEFAULT false;

-- A claim now takes never-started rows of any version (and rows enqueued without one): the
-- claim path no longer walks one version's rows, but every ENQUEUED row of the queue in
-- priority, then FIFO order, skipping started rows of other versions.
CREATE INDEX workflow_status_claim_order
    ON {schema}.workflow_status (queue_name, priority, seq)
    WHERE status = 'ENQUEUED';
CREATE INDEX workflow_status_claim_partition_order
    ON {schema}.workflow_status (queue_name, partition_key, priority, seq)
    WHERE status = 'ENQUEUED' AND partition_key IS NOT NULL;
DROP INDEX {schema}.workflow_status_claim;
DROP INDEX {schema}.workflow_status_claim_partition;
