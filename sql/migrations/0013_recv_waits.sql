-- pgflow schema, version 13: what a recv waits for, for `pgflow explain`.
--
-- A recv that finds no message records its step, topic ('' for none), since when and until
-- when (its timeout) on the workflow's row before it waits; the transaction that takes the
-- message (or records the timeout) clears them. A recv whose message is already there writes
-- nothing more. Nullable columns without a default: adding them rewrites no row.
ALTER TABLE {schema}.workflow_status
    ADD COLUMN wait_step integer,
    ADD COLUMN wait_topic text,
    ADD COLUMN wait_since timestamptz,
    ADD COLUMN wait_until timestamptz;
