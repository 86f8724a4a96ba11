-- pgflow schema, version 15: the failed workflows' index carries their status.
--
-- The dashboard's overview counts ERROR, CANCELLED and MAX_RECOVERY_ATTEMPTS_EXCEEDED workflows
-- exactly (dashboard_unfinished_counts). With only `seq` in workflow_status_failed, that count
-- read every failed row from the heap (63,635 rows: 290 ms at a million workflows). With the
-- status included it is an index-only scan; the list filtered by these statuses still walks the
-- index in `seq` order. Only failed rows are in the index, so a successful finish writes nothing
-- more.
DROP INDEX {schema}.workflow_status_failed;
CREATE INDEX workflow_status_failed ON {schema}.workflow_status (seq) INCLUDE (status)
    WHERE status IN ('ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED');
