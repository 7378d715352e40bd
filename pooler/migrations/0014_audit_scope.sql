-- The audit log page (issue 14): which Pool an event concerns and how it ended.
-- pool_id: the one Pool the event concerns (NULL: instance-wide, such as operators, the
-- instance settings, sign-ins; an admin never sees those). No foreign key: the trail
-- outlives the Pool. outcome: 'ok', or 'refused' (turned away unchecked, e.g. a throttled
-- sign-in) or 'failed' (checked and wrong, or an operation that errored).
ALTER TABLE audit_events
    ADD COLUMN pool_id uuid,
    ADD COLUMN outcome text NOT NULL DEFAULT 'ok'
        CHECK (outcome IN ('ok', 'refused', 'failed'));

-- Backfill what the existing rows make known: a Pool's own events, then keys, invites and
-- accounts through the row they name or the Pool name their details carry.
UPDATE audit_events SET pool_id = target_id::uuid
 WHERE target_type = 'pool'
   AND target_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
UPDATE audit_events e SET pool_id = k.pool_id
  FROM pool_api_keys k
 WHERE e.target_type = 'api_key' AND e.pool_id IS NULL AND k.id::text = e.target_id;
UPDATE audit_events e SET pool_id = i.pool_id
  FROM pool_invites i
 WHERE e.target_type = 'invite' AND e.pool_id IS NULL AND i.id::text = e.target_id;
UPDATE audit_events e SET pool_id = p.id
  FROM pools p
 WHERE e.pool_id IS NULL AND e.target_type IN ('api_key', 'invite', 'account')
   AND jsonb_typeof(e.details -> 'pool') = 'string' AND p.name = e.details ->> 'pool';

UPDATE audit_events
   SET outcome = CASE WHEN details ->> 'reason' = 'throttled' THEN 'refused' ELSE 'failed' END
 WHERE action LIKE '%\_failed';
UPDATE audit_events SET outcome = 'failed'
 WHERE action = 'account.refresh' AND details -> 'ok' = 'false'::jsonb;

-- The page's order and keyset: (created_at, id), newest first (each index read backwards;
-- the row comparison `(created_at, id) < (%s, %s)` is an index condition). Each filter's
-- index leads with its column and keeps that order, so a page reads ~51 index entries.
DROP INDEX audit_events_created_at_idx;
CREATE INDEX audit_events_created_at_idx ON audit_events (created_at, id);
CREATE INDEX audit_events_pool_idx ON audit_events (pool_id, created_at, id);
CREATE INDEX audit_events_actor_idx ON audit_events (actor, created_at, id);
-- text_pattern_ops: an action prefix (`api_key.`) is a LIKE 'api_key.%' range scan.
CREATE INDEX audit_events_action_idx
    ON audit_events (action text_pattern_ops, created_at, id);
DROP INDEX audit_events_target_idx;
CREATE INDEX audit_events_target_idx
    ON audit_events (target_type, target_id, created_at, id);
-- Few rows are not 'ok': a small partial index finds each other outcome newest first.
CREATE INDEX audit_events_not_ok_idx ON audit_events (outcome, created_at, id)
    WHERE outcome <> 'ok';
