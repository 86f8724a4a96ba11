-- name: set_clock_offset
-- Move this session's database clock ({schema}.clock()) by a number of seconds (tests only;
-- production sessions never set it, and clock() is then statement_timestamp()).
SELECT set_config('pgflow.clock_offset', %(offset)s::text, false);

-- name: clock_now
SELECT {schema}.clock() AS now;
