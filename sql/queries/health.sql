-- name: ping
-- Readiness (/healthz): the server answers a statement.
SELECT 1 AS ok;
