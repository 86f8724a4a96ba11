-- pgflow schema, version 12: a record of executors that died.
--
-- The statement that reaps a dead executor (claim_dead_executors) deletes its row; it now also
-- writes one here: who it was, when it was reaped and by whom, and how many PENDING workflows
-- it held (handed back by release_executor_work in the same transaction). `pgflow workers` and
-- the dashboard show them as "died recently". The same statement keeps the newest 100 and none
-- older than a day.
CREATE TABLE {schema}.executor_deaths (
    executor_id       text PRIMARY KEY,
    hostname          text NOT NULL,
    pid               integer NOT NULL,
    app_version       text,
    kind              text NOT NULL,
    last_heartbeat_at timestamptz NOT NULL,
    died_at           timestamptz NOT NULL,
    reaped_by         text NOT NULL,
    released          integer NOT NULL
);
CREATE INDEX executor_deaths_died_at ON {schema}.executor_deaths (died_at);
