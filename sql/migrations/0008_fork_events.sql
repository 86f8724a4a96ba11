-- pgflow schema, version 8: every value a workflow publishes with set_event, by the step that
-- published it, so a fork from step N starts with the events its reused steps (those before
-- N) had published. workflow_events keeps only the latest value of each key.
CREATE TABLE {schema}.workflow_event_history (
    workflow_id  text NOT NULL REFERENCES {schema}.workflow_status (workflow_id)
                     ON DELETE CASCADE,
    step_id      integer NOT NULL,
    key          text NOT NULL,
    serializer   text NOT NULL DEFAULT 'json',
    value        text NOT NULL,
    PRIMARY KEY (workflow_id, step_id)
);
