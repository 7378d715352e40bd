-- Routing that never wastes an account (issue 4): continuity switch per Pool, quota
-- evidence beyond the two codex windows (credits, model-scoped families), instance
-- settings applied live, and request logs that explain continuity decisions.

ALTER TABLE pools
    ADD COLUMN continuity_enabled boolean NOT NULL DEFAULT true;

-- The display name of an extra limit family (often a model name: the window then applies
-- only to that model) and where the evidence came from.
ALTER TABLE quota_windows
    ADD COLUMN limit_name text CHECK (char_length(limit_name) <= 200),
    ADD COLUMN source     text NOT NULL DEFAULT 'headers'
                          CHECK (source IN ('headers', 'event', 'error', 'usage_api'));

CREATE TABLE account_credits (
    account_id  uuid PRIMARY KEY REFERENCES upstream_accounts (id) ON DELETE CASCADE,
    has_credits boolean NOT NULL,
    unlimited   boolean NOT NULL,
    balance     text CHECK (char_length(balance) <= 64),
    observed_at timestamptz NOT NULL DEFAULT now()
);

-- One row: settings an operator changes at run time (circuits, bulkheads, usage polling).
-- Unknown keys are ignored and missing keys take their defaults (pooler.instance_settings).
CREATE TABLE instance_settings (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    settings   jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(settings) = 'object'),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO instance_settings (id) VALUES (true);

-- How the request met its conversation: 'none' (no continuity key), 'new', 'kept'
-- (served by the pinned account), 'moved' (the pinned account was skipped: the reason is in
-- exclusions under continuity_from's label), 'disabled' (the Pool turned continuity off).
ALTER TABLE request_logs
    ADD COLUMN continuity      text CHECK (continuity IN ('none', 'new', 'kept', 'moved',
                                                          'disabled')),
    ADD COLUMN continuity_from uuid;
