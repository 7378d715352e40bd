-- Cost accounting (issue 16): what each request would have cost at OpenAI's API list
-- prices (pooler.pricing), in US dollars, computed when the row is recorded and never
-- recomputed: a row keeps the price of its day. NULL: nothing to price (no usage) or a
-- model the catalog does not list (never a guess).
ALTER TABLE request_logs ADD COLUMN cost_usd numeric CHECK (cost_usd >= 0);

-- The rollups carry the exact sum of the rows' costs, and how many rows had tokens but no
-- price (a model the catalog does not list), so a page can say what it leaves out.
ALTER TABLE stats_hourly
    ADD COLUMN cost_usd          numeric NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
    ADD COLUMN unpriced_requests bigint NOT NULL DEFAULT 0 CHECK (unpriced_requests >= 0);
ALTER TABLE stats_daily
    ADD COLUMN cost_usd          numeric NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
    ADD COLUMN unpriced_requests bigint NOT NULL DEFAULT 0 CHECK (unpriced_requests >= 0);

-- The price catalog last fetched from `pricing.refresh_url` (one row at most), validated
-- before it is stored; every node uses it while that URL is set (pooler.pricing_refresh).
-- A table rather than the instance settings: it is fetched data, not an operator's
-- choice (no audit event per fetch), and up to 1 MiB that every settings read would carry.
CREATE TABLE pricing_catalog (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    source_url  text NOT NULL CHECK (char_length(source_url) <= 2048),
    catalog     jsonb NOT NULL,
    digest      text NOT NULL CHECK (char_length(digest) = 64),
    fetched_at  timestamptz NOT NULL DEFAULT now(),
    checked_at  timestamptz NOT NULL DEFAULT now()
);
