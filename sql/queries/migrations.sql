-- name: migrate_lock
SELECT pg_advisory_lock(hashtextextended(%(lock_name)s, 0));

-- name: migrate_unlock
SELECT pg_advisory_unlock(hashtextextended(%(lock_name)s, 0));

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS {schema}.migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- name: applied_migrations
SELECT version FROM {schema}.migrations ORDER BY version;

-- name: record_migration
INSERT INTO {schema}.migrations (version, name) VALUES (%(version)s, %(name)s);

-- name: migrations_table_exists
SELECT to_regclass(format('%%I.migrations', %(schema)s::text)) IS NOT NULL AS present;

-- name: schema_version
SELECT max(version) AS version FROM {schema}.migrations;

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema};

-- name: drop_schema
DROP SCHEMA IF EXISTS {schema} CASCADE;

-- name: grant_schema_usage
GRANT USAGE ON SCHEMA {schema} TO {role};

-- name: grant_table_dml
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role};

-- name: grant_sequences
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role};
