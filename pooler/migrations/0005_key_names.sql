-- A key's name is unique among its Pool's active keys (issue 11), so a key can be named in
-- `pooler admin key update/revoke NAME`. Empty names are unnamed keys and may repeat; a
-- revoked key frees its name.

-- Active keys that already share a name in a Pool: the oldest keeps it, each other one gets
-- its id appended (at most 60 + 39 characters, within the 100 allowed), audited.
WITH ranked AS (
    SELECT id, row_number() OVER (PARTITION BY pool_id, name ORDER BY created_at, id) AS n
    FROM pool_api_keys
    WHERE status = 'active' AND name <> ''
), renamed AS (
    UPDATE pool_api_keys k
    SET name = left(k.name, 60) || ' (' || k.id::text || ')'
    FROM ranked r
    WHERE k.id = r.id AND r.n > 1
    RETURNING k.id, k.name
)
INSERT INTO audit_events (actor, action, target_type, target_id, details)
SELECT 'migration', 'api_key.rename', 'api_key', id::text,
       jsonb_build_object('name', name, 'reason', 'another active key of the Pool had its name')
FROM renamed;

CREATE UNIQUE INDEX pool_api_keys_active_name_key ON pool_api_keys (pool_id, name)
    WHERE status = 'active' AND name <> '';
