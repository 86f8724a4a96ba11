-- pgflow schema, version 2: schedules. (Messages and events use the notifications and
-- workflow_events tables of version 1.)

-- One row per @app.scheduled workflow: the last tick enqueued. A tick's workflow id
-- ("sched:<name>:<tick>") is what makes it run once; last_tick only says where the next
-- look for due ticks starts (so a schedule never runs ticks from before it was first seen).
CREATE TABLE {schema}.schedules (
    name        text PRIMARY KEY,
    cron        text NOT NULL,
    last_tick   timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

