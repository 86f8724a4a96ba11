-- name: schedule_state
-- Each schedule's last enqueued tick, registering new schedules as of `now` (a schedule never
-- runs ticks from before it was first seen), and the time to look for due ticks at.
-- (The second SELECT sees only rows that existed before this statement.)
WITH at AS (
    SELECT coalesce(%(now)s::timestamptz, {schema}.clock()) AS now
), ins AS (
    INSERT INTO {schema}.schedules (name, cron, last_tick, created_at, updated_at)
    SELECT s.name, s.cron, at.now, at.now, at.now
    FROM unnest(%(names)s::text[], %(crons)s::text[]) AS s (name, cron), at
    ON CONFLICT (name) DO NOTHING
    RETURNING name, last_tick
)
SELECT ins.name, ins.last_tick, at.now FROM ins, at
UNION ALL
SELECT s.name, s.last_tick, at.now FROM {schema}.schedules AS s, at
WHERE s.name = ANY(%(names)s::text[]);

-- name: advance_schedule
-- Record the newest tick enqueued (in the transaction that enqueued it).
UPDATE {schema}.schedules
SET last_tick = greatest(last_tick, %(last_tick)s), cron = %(cron)s,
    updated_at = {schema}.clock()
WHERE name = %(name)s;
