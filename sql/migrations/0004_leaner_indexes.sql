-- pgflow schema, version 4: fewer indexes on workflow_status.
--
-- A row's status is in the predicate of the partial indexes, so no state change is a HOT
-- update: every index gets a new entry on the enqueue, the claim and the finish. The three
-- listing indexes (created_at; name, created_at; status, created_at) cost an entry each on
-- every one of those writes, and the listing (ordered by seq) could not use them for its order.
-- Listing now walks seq (newest or oldest first, stopping at its LIMIT), and the failures,
-- rare and looked for, keep an index of their own.
DROP INDEX {schema}.workflow_status_created;
DROP INDEX {schema}.workflow_status_name;
DROP INDEX {schema}.workflow_status_status;

CREATE INDEX workflow_status_seq ON {schema}.workflow_status (seq);
CREATE INDEX workflow_status_failed ON {schema}.workflow_status (seq)
    WHERE status IN ('ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED');
