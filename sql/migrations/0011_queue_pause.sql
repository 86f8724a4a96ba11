-- pgflow schema, version 11: pausing a queue.
--
-- A paused queue keeps its work but no worker claims from it (`pgflow queues pause Q`); work
-- already running finishes. Durable: it stays paused across worker restarts until resumed.
-- Workers read the paused queues once a second and when woken, so a pause takes effect within
-- about a second everywhere.
ALTER TABLE {schema}.queues
    ADD COLUMN paused boolean NOT NULL DEFAULT false,
    ADD COLUMN paused_at timestamptz;
