-- The request log pages (issue 14) list newest first in keyset pages on (created_at, id),
-- filtered by one or more columns. Each filter that can be selective gets an index that
-- leads with its column and ends (created_at, id): a page then reads about 50 index entries
-- backwards whatever the table's size, instead of walking the time index past every row
-- that does not match. The older two-column indexes are replaced by their (…, id) form
-- (retention's `created_at < cutoff` and per-Pool/per-account scans use these as well).
DROP INDEX IF EXISTS request_logs_created_at_idx;
CREATE INDEX request_logs_created_id_idx ON request_logs (created_at, id);
DROP INDEX IF EXISTS request_logs_pool_created_idx;
CREATE INDEX request_logs_pool_created_id_idx ON request_logs (pool_id, created_at, id);
DROP INDEX IF EXISTS request_logs_account_created_idx;
CREATE INDEX request_logs_account_created_id_idx ON request_logs (account_id, created_at, id);
-- A key without its Pool (request_logs_key_created_idx leads with pool_id, for /v1/usage).
CREATE INDEX request_logs_prefix_created_id_idx ON request_logs (key_prefix, created_at, id);
CREATE INDEX request_logs_model_created_id_idx ON request_logs (model, created_at, id);
-- Most rows have no error code: the partial index holds only those that do.
CREATE INDEX request_logs_error_created_id_idx ON request_logs (error_code, created_at, id)
    WHERE error_code IS NOT NULL;
-- Status class (2xx, 4xx, ...): the query asks for `(status_code / 100) = n`.
CREATE INDEX request_logs_status_class_created_id_idx
    ON request_logs ((status_code / 100), created_at, id);
-- Route and transport have few values, but one can be rare (or absent) in a deployment:
-- without these a filter on it walks the whole range (~0.6 s over 30 days of 1,000,000
-- rows when nothing matches). Continuity: only the rarer outcomes an operator hunts for
-- ('kept' and 'none' are most rows: the time index finds a page of them at once).
CREATE INDEX request_logs_route_created_id_idx ON request_logs (route, created_at, id);
CREATE INDEX request_logs_transport_created_id_idx ON request_logs (transport, created_at, id);
CREATE INDEX request_logs_continuity_created_id_idx ON request_logs (continuity, created_at, id)
    WHERE continuity IN ('new', 'moved', 'disabled');
