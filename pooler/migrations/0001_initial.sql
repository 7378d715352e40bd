-- Codex Pooler: initial schema (DESIGN §3).
-- Secrets never appear in clear: upstream tokens are AES-256-GCM ciphertext
-- (account_secrets), Pool API keys and MCP tokens are HMAC-SHA256 digests plus a display prefix,
-- operator passwords are scrypt hashes, continuity keys are digests.
-- History tables (request_logs, request_attempts, audit_events) carry no foreign keys: they
-- outlive what they mention, and a log batch must never fail because a pool was deleted.

CREATE TABLE operators (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL CHECK (email = lower(btrim(email)) AND email LIKE '%_@_%'),
    password_hash text NOT NULL,
    role          text NOT NULL DEFAULT 'admin' CHECK (role IN ('owner', 'admin')),
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    last_login_at timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT operators_email_key UNIQUE (email)
);

CREATE TABLE operator_mcp_tokens (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    operator_id  uuid NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (char_length(name) <= 100),
    token_prefix text NOT NULL,
    token_digest bytea NOT NULL CHECK (length(token_digest) = 32),
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CONSTRAINT operator_mcp_tokens_digest_key UNIQUE (token_digest),
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);
CREATE INDEX operator_mcp_tokens_operator_idx ON operator_mcp_tokens (operator_id);

CREATE TABLE pools (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                      text NOT NULL
                              CHECK (char_length(name) BETWEEN 1 AND 64 AND name = btrim(name)),
    strategy                  text NOT NULL DEFAULT 'least_used'
                              CHECK (strategy IN ('least_used', 'round_robin', 'fill_first',
                                                  'weighted')),
    status                    text NOT NULL DEFAULT 'active'
                              CHECK (status IN ('active', 'disabled')),
    quota_threshold_percent   numeric(6, 3) NOT NULL DEFAULT 100
                              CHECK (quota_threshold_percent > 0
                                     AND quota_threshold_percent <= 100),
    retry_budget              integer NOT NULL DEFAULT 3 CHECK (retry_budget BETWEEN 0 AND 20),
    max_in_flight_per_account integer NOT NULL DEFAULT 32
                              CHECK (max_in_flight_per_account BETWEEN 1 AND 100000),
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pools_name_key UNIQUE (name)
);

-- One row per ChatGPT identity: a workspace (chatgpt_account_id) and, for multi-seat
-- workspaces, the seat's user (chatgpt_user_id); each seat has its own tokens and quota.
CREATE TABLE upstream_accounts (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    label                   text NOT NULL CHECK (char_length(label) BETWEEN 1 AND 200),
    email                   text,
    chatgpt_account_id      text NOT NULL CHECK (chatgpt_account_id <> ''),
    chatgpt_user_id         text,
    plan_type               text,
    lifecycle               text NOT NULL DEFAULT 'active'
                            CHECK (lifecycle IN ('active', 'paused', 'reauth_required',
                                                 'disabled')),
    lifecycle_reason        text,
    access_token_expires_at timestamptz,
    last_refresh_at         timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT upstream_accounts_identity_key
        UNIQUE NULLS NOT DISTINCT (chatgpt_account_id, chatgpt_user_id)
);

CREATE TABLE account_secrets (
    account_id  uuid NOT NULL REFERENCES upstream_accounts (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('access_token', 'refresh_token', 'id_token')),
    key_version integer NOT NULL,
    nonce       bytea NOT NULL CHECK (length(nonce) = 12),
    ciphertext  bytea NOT NULL CHECK (length(ciphertext) >= 16),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, kind)
);
CREATE INDEX account_secrets_key_version_idx ON account_secrets (key_version);

CREATE TABLE pool_assignments (
    pool_id    uuid NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    account_id uuid NOT NULL REFERENCES upstream_accounts (id) ON DELETE CASCADE,
    status     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    weight     integer NOT NULL DEFAULT 1 CHECK (weight BETWEEN 0 AND 1000000),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pool_id, account_id)
);
CREATE INDEX pool_assignments_account_idx ON pool_assignments (account_id);

CREATE TABLE pool_api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    pool_id      uuid NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (char_length(name) <= 100),
    key_prefix   text NOT NULL,
    key_digest   bytea NOT NULL CHECK (length(key_digest) = 32),
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CONSTRAINT pool_api_keys_digest_key UNIQUE (key_digest),
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);
CREATE INDEX pool_api_keys_pool_idx ON pool_api_keys (pool_id);
CREATE INDEX pool_api_keys_prefix_idx ON pool_api_keys (key_prefix);

-- Latest evidence per account and window ("window" is reserved in SQL: window_kind).
CREATE TABLE quota_windows (
    account_id     uuid NOT NULL REFERENCES upstream_accounts (id) ON DELETE CASCADE,
    family         text NOT NULL DEFAULT 'codex',
    window_kind    text NOT NULL CHECK (window_kind IN ('primary', 'secondary')),
    used_percent   numeric(7, 3) NOT NULL CHECK (used_percent >= 0),
    window_minutes integer CHECK (window_minutes > 0),
    reset_at       timestamptz,
    observed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, family, window_kind)
);

CREATE TABLE request_logs (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    request_id          text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    pool_id             uuid,
    key_prefix          text,
    route               text NOT NULL,
    transport           text,
    model               text,
    stream              boolean NOT NULL DEFAULT false,
    status_code         integer,
    outcome             text NOT NULL,
    error_code          text,
    account_id          uuid,
    account_label       text,
    retries             integer NOT NULL DEFAULT 0 CHECK (retries >= 0),
    duration_ms         numeric,
    ttfb_ms             numeric,
    input_tokens        bigint,
    cached_input_tokens bigint,
    output_tokens       bigint,
    reasoning_tokens    bigint,
    total_tokens        bigint,
    exclusions          jsonb,
    client_user_agent   text,
    CONSTRAINT request_logs_request_id_key UNIQUE (request_id)
);
CREATE INDEX request_logs_created_at_idx ON request_logs (created_at);
CREATE INDEX request_logs_pool_created_idx ON request_logs (pool_id, created_at);
CREATE INDEX request_logs_account_created_idx ON request_logs (account_id, created_at);

CREATE TABLE request_attempts (
    request_id    text NOT NULL,
    attempt       integer NOT NULL CHECK (attempt >= 1),
    account_id    uuid,
    account_label text,
    started_at    timestamptz NOT NULL,
    duration_ms   numeric,
    status_code   integer,
    outcome       text NOT NULL,
    error_code    text,
    PRIMARY KEY (request_id, attempt)
);
CREATE INDEX request_attempts_started_at_idx ON request_attempts (started_at);

CREATE TABLE audit_events (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    target_type text,
    target_id   text,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_events_created_at_idx ON audit_events (created_at);
CREATE INDEX audit_events_target_idx ON audit_events (target_type, target_id);

-- Continuity key (hashed) -> the account holding its prompt cache (DESIGN §4).
CREATE TABLE continuity_pins (
    pool_id    uuid NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    key_digest bytea NOT NULL CHECK (length(key_digest) BETWEEN 16 AND 64),
    account_id uuid NOT NULL REFERENCES upstream_accounts (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pool_id, key_digest)
);
CREATE INDEX continuity_pins_expires_at_idx ON continuity_pins (expires_at);
CREATE INDEX continuity_pins_account_idx ON continuity_pins (account_id);
