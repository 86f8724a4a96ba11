-- pgflow schema, version 9: how many attempts each step took.
--
-- A step retried by its policy records the number of attempts it made (1 when it succeeded
-- at once); `pgflow workflows show` lists it. NULL for checkpoints that are not step runs
-- (messages, events, children) and for steps recorded before this version.
ALTER TABLE {schema}.operation_outputs ADD COLUMN attempts integer;
