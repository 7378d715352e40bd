-- Hourly rollups of request_logs for the console's stats page (issue 14): one row per
-- (UTC hour, Pool, account, key prefix) that saw traffic, maintained by the Scheduler from
-- raw rows (pooler.store.rollups). Rollups outlive the raw rows: retention never deletes
-- them, and an hour that lost raw rows is never recomputed (stats_pruned_hours).

-- What counts as an error, defined once: an HTTP status of 400 or more, or any outcome but
-- 'completed' (a stream that failed after a 200, a client that left).
CREATE FUNCTION request_is_error(status_code integer, outcome text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT coalesce($1 >= 400, false) OR $2 IS DISTINCT FROM 'completed' $$;

CREATE TABLE stats_hourly (
    hour                timestamptz NOT NULL CHECK (hour = date_trunc('hour', hour, 'UTC')),
    pool_id             uuid,
    account_id          uuid,
    key_prefix          text,
    requests            bigint NOT NULL CHECK (requests > 0),
    errors              bigint NOT NULL CHECK (errors BETWEEN 0 AND requests),
    input_tokens        bigint NOT NULL DEFAULT 0,
    cached_input_tokens bigint NOT NULL DEFAULT 0,
    output_tokens       bigint NOT NULL DEFAULT 0,
    reasoning_tokens    bigint NOT NULL DEFAULT 0,
    -- duration_ms of the rows that have one: count, exact sum, and the fixed log-spaced
    -- histogram (pooler.latency_histogram) stored sparse: bucket indexes ascending, counts.
    latency_count       bigint NOT NULL DEFAULT 0,
    latency_sum_ms      numeric NOT NULL DEFAULT 0,
    latency_buckets     smallint[] NOT NULL DEFAULT '{}',
    latency_counts      bigint[] NOT NULL DEFAULT '{}',
    -- Error codes of the error rows: the hour's top few (code -> count) and the rest.
    error_codes         jsonb NOT NULL DEFAULT '{}',
    error_codes_other   bigint NOT NULL DEFAULT 0,
    computed_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (cardinality(latency_buckets) = cardinality(latency_counts)),
    CONSTRAINT stats_hourly_group_key
        UNIQUE NULLS NOT DISTINCT (hour, pool_id, account_id, key_prefix)
);
CREATE INDEX stats_hourly_pool_hour_idx ON stats_hourly (pool_id, hour);

-- Hours that lost raw rows (retention, any DELETE, a TRUNCATE): their rollup is final.
CREATE TABLE stats_pruned_hours (
    hour      timestamptz PRIMARY KEY,
    pruned_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION stats_note_pruned_hours() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stats_pruned_hours (hour)
    SELECT DISTINCT date_trunc('hour', created_at, 'UTC') FROM gone
    ON CONFLICT (hour) DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER request_logs_note_pruned_hours
    AFTER DELETE ON request_logs REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION stats_note_pruned_hours();

-- A TRUNCATE fires no DELETE trigger: every hour still holding rows is noted before it.
CREATE FUNCTION stats_note_truncated_hours() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stats_pruned_hours (hour)
    SELECT DISTINCT date_trunc('hour', created_at, 'UTC') FROM request_logs
    ON CONFLICT (hour) DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER request_logs_note_truncated_hours
    BEFORE TRUNCATE ON request_logs
    FOR EACH STATEMENT EXECUTE FUNCTION stats_note_truncated_hours();
