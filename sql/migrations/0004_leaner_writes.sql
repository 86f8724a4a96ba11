-- pgflow schema, version 4: fewer index entries and checks per write.
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

-- A checkpoint is written only through statements that first find (and lock) the workflow's
-- row as its owner's, so the foreign key's own lookup of that row on every step was a second
-- check of the same fact. Nothing deletes workflows; whoever prunes old ones deletes their
-- operation_outputs rows with them.
ALTER TABLE {schema}.operation_outputs DROP CONSTRAINT operation_outputs_workflow_id_fkey;
