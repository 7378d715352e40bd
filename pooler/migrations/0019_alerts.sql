-- Alerts (issue 16): rules per Pool, notification channels per Pool, incidents opened and
-- resolved by the leader's evaluation pass (pooler.alerts), and the deliveries of each
-- incident's notifications (metadata only: status, attempts, the last error's class).

CREATE TABLE alert_rules (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    pool_id      uuid NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    -- usable_below: usable accounts < threshold; reauth_required: an assigned account needs
    -- a new login; quota_above: a quota window's Pool-wide used percent >= threshold;
    -- error_rate_above: errors over the last 5 minutes >= threshold percent of requests
    -- (at least min_requests of them).
    kind         text NOT NULL CHECK (kind IN
                     ('usable_below', 'reauth_required', 'quota_above', 'error_rate_above')),
    threshold    double precision CHECK (threshold >= 0 AND threshold <= 1000000),
    min_requests integer NOT NULL DEFAULT 10 CHECK (min_requests BETWEEN 1 AND 1000000),
    created_by   text NOT NULL CHECK (char_length(created_by) <= 300),
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'reauth_required') = (threshold IS NULL))
);
CREATE INDEX alert_rules_pool_idx ON alert_rules (pool_id);

CREATE TABLE alert_channels (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    pool_id     uuid NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('webhook', 'email')),
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    -- webhook: the URL and its signing secret (AES-256-GCM under the keyring, bound to the
    -- channel's id); email: the recipient.
    url         text CHECK (char_length(url) <= 2048),
    key_version integer,
    nonce       bytea CHECK (length(nonce) = 12),
    ciphertext  bytea,
    email_to    text CHECK (char_length(email_to) <= 320),
    created_by  text NOT NULL CHECK (char_length(created_by) <= 300),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (kind <> 'webhook' OR (url IS NOT NULL AND ciphertext IS NOT NULL
                                 AND nonce IS NOT NULL AND key_version IS NOT NULL)),
    CHECK (kind <> 'email' OR email_to IS NOT NULL)
);
CREATE INDEX alert_channels_pool_idx ON alert_channels (pool_id);

CREATE TABLE alert_incidents (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    rule_id     uuid NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    pool_id     uuid NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    kind        text NOT NULL,
    -- What the condition is about: 'pool', a window kind, an account id.
    subject     text NOT NULL CHECK (char_length(subject) <= 100),
    summary     text NOT NULL CHECK (char_length(summary) <= 500),
    details     jsonb NOT NULL DEFAULT '{}',
    opened_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    CHECK (resolved_at IS NULL OR resolved_at >= opened_at)
);
-- One open incident per (rule, subject): two leaders overlapping cannot open it twice.
CREATE UNIQUE INDEX alert_incidents_open_once
    ON alert_incidents (rule_id, subject) WHERE resolved_at IS NULL;
CREATE INDEX alert_incidents_pool_idx ON alert_incidents (pool_id, opened_at DESC);

CREATE TABLE alert_deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    incident_id     uuid NOT NULL REFERENCES alert_incidents (id) ON DELETE CASCADE,
    channel_id      uuid NOT NULL REFERENCES alert_channels (id) ON DELETE CASCADE,
    event           text NOT NULL CHECK (event IN ('opened', 'resolved')),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- The class of the last failure (timeout, connect, http_503, smtp, ...), never a body.
    last_error      text CHECK (char_length(last_error) <= 100),
    -- Due from this time; a pass that takes the delivery moves it ahead (its claim), so a
    -- leader that dies mid-send leaves it to a later pass.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    CONSTRAINT alert_deliveries_once UNIQUE (incident_id, channel_id, event)
);
CREATE INDEX alert_deliveries_due_idx
    ON alert_deliveries (next_attempt_at) WHERE status = 'pending';

-- Secrets of the alert senders that are not per channel (the SMTP password), encrypted
-- under the keyring and bound to their name.
CREATE TABLE alert_secrets (
    name        text PRIMARY KEY CHECK (name IN ('smtp.password')),
    key_version integer NOT NULL,
    nonce       bytea NOT NULL CHECK (length(nonce) = 12),
    ciphertext  bytea NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
