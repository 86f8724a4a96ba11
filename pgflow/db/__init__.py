"""Database access: named queries, the connection pool, migrations and per-table functions."""
