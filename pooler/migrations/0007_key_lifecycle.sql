-- Pool API keys in the console (issue 13): a key can be paused (refused by the gateway
-- like a revoked one, but resumable) and rotated (a new secret for the same record).
-- A paused key keeps its name: names stay unique among the Pool's keys that are not
-- revoked. A rotation keeps the key's earlier display prefixes, so the request logs
-- written under them (which name a key by its prefix) still count for it.

ALTER TABLE pool_api_keys DROP CONSTRAINT pool_api_keys_status_check;
ALTER TABLE pool_api_keys
    ADD CONSTRAINT pool_api_keys_status_check
        CHECK (status IN ('active', 'paused', 'revoked')),
    ADD COLUMN previous_prefixes text[] NOT NULL DEFAULT '{}'
        CHECK (cardinality(previous_prefixes) <= 100),
    ADD COLUMN rotated_at timestamptz;

DROP INDEX pool_api_keys_active_name_key;
CREATE UNIQUE INDEX pool_api_keys_live_name_key ON pool_api_keys (pool_id, name)
    WHERE status <> 'revoked' AND name <> '';
