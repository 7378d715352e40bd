-- Daily rollups (issue 14): the hourly rollups of stats_hourly summed per UTC day and group,
-- so that a week or a month on the stats page reads ~24 times fewer rows (at 1,000,000
-- raw rows over 30 days: 3.3 s for the 30-day page from hourly rows). Derived from
-- stats_hourly only (pooler.store.rollups recomputes a day whenever one of its hours is
-- recomputed), so an hour frozen by retention stays in its day. Error codes are the union
-- of the hours' kept codes (not cut again), so a day reads exactly as its 24 hours do.
CREATE TABLE stats_daily (
    day                 timestamptz NOT NULL CHECK (day = date_trunc('day', day, 'UTC')),
    pool_id             uuid,
    account_id          uuid,
    key_prefix          text,
    requests            bigint NOT NULL CHECK (requests > 0),
    errors              bigint NOT NULL CHECK (errors BETWEEN 0 AND requests),
    input_tokens        bigint NOT NULL DEFAULT 0,
    cached_input_tokens bigint NOT NULL DEFAULT 0,
    output_tokens       bigint NOT NULL DEFAULT 0,
    reasoning_tokens    bigint NOT NULL DEFAULT 0,
    latency_count       bigint NOT NULL DEFAULT 0,
    latency_sum_ms      numeric NOT NULL DEFAULT 0,
    latency_buckets     smallint[] NOT NULL DEFAULT '{}',
    latency_counts      bigint[] NOT NULL DEFAULT '{}',
    error_codes         jsonb NOT NULL DEFAULT '{}',
    error_codes_other   bigint NOT NULL DEFAULT 0,
    computed_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (cardinality(latency_buckets) = cardinality(latency_counts)),
    CONSTRAINT stats_daily_group_key
        UNIQUE NULLS NOT DISTINCT (day, pool_id, account_id, key_prefix)
);
CREATE INDEX stats_daily_pool_day_idx ON stats_daily (pool_id, day);
