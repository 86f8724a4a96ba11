-- pgflow schema, version 1. `{schema}` is replaced by the quoted schema identifier.

CREATE TABLE {schema}.workflow_status (
    workflow_id            text PRIMARY KEY,
    seq                    bigint GENERATED ALWAYS AS IDENTITY,
    name                   text NOT NULL,
    status                 text NOT NULL CHECK (status IN ('ENQUEUED', 'PENDING', 'SUCCESS',
                               'ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')),
    queue_name             text,
    dedup_id               text,
    priority               integer NOT NULL DEFAULT 0,
    partition_key          text,
    parent_workflow_id     text,
    executor_id            text,
    attempt                integer NOT NULL DEFAULT 0,
    app_version            text,
    recovery_attempts      integer NOT NULL DEFAULT 0,
    max_recovery_attempts  integer,
    serializer             text NOT NULL DEFAULT 'json',
    inputs                 text NOT NULL,
    output                 text,
    error                  text,
    timeout_ms             bigint,
    deadline               timestamptz,
    not_before             timestamptz,
    forked_from            text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    started_at             timestamptz,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    completed_at           timestamptz
);

-- The claim path: ENQUEUED rows of one queue and version in priority, then FIFO order.
CREATE INDEX workflow_status_claim
    ON {schema}.workflow_status (queue_name, app_version, priority, seq)
    WHERE status = 'ENQUEUED';

-- The claim path of partitioned queues: per key, in priority then FIFO order.
CREATE INDEX workflow_status_claim_partition
    ON {schema}.workflow_status (queue_name, partition_key, app_version, priority, seq)
    WHERE status = 'ENQUEUED' AND partition_key IS NOT NULL;

-- Running rows per queue (concurrency counts) and per executor (recovery, hand-back).
CREATE INDEX workflow_status_running
    ON {schema}.workflow_status (queue_name, partition_key)
    WHERE status = 'PENDING';
CREATE INDEX workflow_status_executor
    ON {schema}.workflow_status (executor_id)
    WHERE status = 'PENDING';
-- Orphans awaiting adoption (PENDING with no owner).
CREATE INDEX workflow_status_orphans
    ON {schema}.workflow_status (app_version, seq)
    WHERE status = 'PENDING' AND executor_id IS NULL;

-- Rate windows: starts per queue (and partition) over time.
CREATE INDEX workflow_status_starts
    ON {schema}.workflow_status (queue_name, started_at)
    WHERE queue_name IS NOT NULL AND started_at IS NOT NULL;

-- Deduplication: one active workflow per (queue, dedup id); terminal rows release the id.
CREATE UNIQUE INDEX workflow_status_dedup_active
    ON {schema}.workflow_status (queue_name, dedup_id)
    WHERE dedup_id IS NOT NULL AND status IN ('ENQUEUED', 'PENDING');

-- Listing.
CREATE INDEX workflow_status_created ON {schema}.workflow_status (created_at);
CREATE INDEX workflow_status_name ON {schema}.workflow_status (name, created_at);
CREATE INDEX workflow_status_status ON {schema}.workflow_status (status, created_at);
CREATE INDEX workflow_status_parent
    ON {schema}.workflow_status (parent_workflow_id)
    WHERE parent_workflow_id IS NOT NULL;

CREATE TABLE {schema}.operation_outputs (
    workflow_id        text NOT NULL REFERENCES {schema}.workflow_status (workflow_id)
                           ON DELETE CASCADE,
    step_id            integer NOT NULL,
    name               text NOT NULL,
    output             text,
    error              text,
    child_workflow_id  text,
    executor_id        text,
    started_at         timestamptz,
    completed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, step_id)
);

CREATE TABLE {schema}.notifications (
    message_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination_id   text NOT NULL,
    topic            text NOT NULL DEFAULT '',
    serializer       text NOT NULL DEFAULT 'json',
    message          text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_destination
    ON {schema}.notifications (destination_id, topic, message_id);

CREATE TABLE {schema}.workflow_events (
    workflow_id   text NOT NULL,
    key           text NOT NULL,
    serializer    text NOT NULL DEFAULT 'json',
    value         text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, key)
);

CREATE TABLE {schema}.executors (
    executor_id     text PRIMARY KEY,
    hostname        text NOT NULL,
    pid             integer NOT NULL,
    app_version     text,
    kind            text NOT NULL DEFAULT 'app',
    queues          text[] NOT NULL DEFAULT ARRAY[]::text[],
    started_at      timestamptz NOT NULL DEFAULT now(),
    heartbeat_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX executors_heartbeat ON {schema}.executors (heartbeat_at);

-- Queue settings as last declared by a worker, for `pgflow queues` and the claim lock.
CREATE TABLE {schema}.queues (
    name                 text PRIMARY KEY,
    concurrency          integer,
    worker_concurrency   integer,
    rate_limit           integer,
    rate_per_seconds     double precision,
    priority_enabled     boolean NOT NULL DEFAULT false,
    partitioned          boolean NOT NULL DEFAULT false,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
