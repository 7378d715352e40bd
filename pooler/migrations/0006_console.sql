-- The operator console (issue 13): operator profiles, TOTP, browser sessions, recovery
-- codes, sign-in throttling and the Pools an admin is assigned.
-- Secrets: session tokens and recovery codes are stored as keyed digests (HMAC-SHA256 under
-- the server secret); a TOTP secret is AES-256-GCM ciphertext under the instance keyring,
-- like upstream tokens (DESIGN §3). Passwords are argon2id from now on; scrypt hashes of
-- earlier versions are replaced at the next sign-in.

ALTER TABLE operators
    ADD COLUMN display_name         text NOT NULL DEFAULT ''
                                    CHECK (char_length(display_name) <= 100),
    ADD COLUMN must_change_password boolean NOT NULL DEFAULT false,
    ADD COLUMN password_changed_at  timestamptz,
    ADD COLUMN totp_key_version     integer,
    ADD COLUMN totp_nonce           bytea CHECK (length(totp_nonce) = 12),
    ADD COLUMN totp_ciphertext      bytea,
    ADD COLUMN totp_enabled_at      timestamptz,
    -- The last 30-second step a code was accepted for: a code is never taken twice.
    ADD COLUMN totp_last_step       bigint,
    ADD CONSTRAINT operators_totp_whole
        CHECK ((totp_ciphertext IS NULL) = (totp_nonce IS NULL)
               AND (totp_ciphertext IS NULL) = (totp_key_version IS NULL)),
    ADD CONSTRAINT operators_totp_enabled_has_secret
        CHECK (totp_enabled_at IS NULL OR totp_ciphertext IS NOT NULL);

-- A browser session. `stage` is 'totp' between a correct password and the second factor
-- (such a session opens nothing but the code form), 'full' after.
CREATE TABLE console_sessions (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_digest bytea NOT NULL CHECK (length(token_digest) = 32),
    operator_id  uuid NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    stage        text NOT NULL DEFAULT 'full' CHECK (stage IN ('full', 'totp')),
    csrf_token   text NOT NULL CHECK (char_length(csrf_token) BETWEEN 32 AND 64),
    ip           text CHECK (char_length(ip) <= 64),
    user_agent   text CHECK (char_length(user_agent) <= 256),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    CONSTRAINT console_sessions_digest_key UNIQUE (token_digest)
);
CREATE INDEX console_sessions_operator_idx ON console_sessions (operator_id);
CREATE INDEX console_sessions_expires_idx ON console_sessions (expires_at);

CREATE TABLE operator_recovery_codes (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    operator_id uuid NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    code_digest bytea NOT NULL CHECK (length(code_digest) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    used_at     timestamptz,
    CONSTRAINT operator_recovery_codes_digest_key UNIQUE (operator_id, code_digest)
);

-- Failed sign-ins, per account (`scope` 'account') and per client address ('ip'); `subject`
-- is a keyed digest of the email or address, so no typed text is kept. Shared by every
-- node on the database; a row is updated atomically by each failure.
CREATE TABLE console_signin_failures (
    scope           text NOT NULL CHECK (scope IN ('account', 'ip')),
    subject         bytea NOT NULL CHECK (length(subject) = 32),
    failures        integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    last_failure_at timestamptz NOT NULL DEFAULT now(),
    blocked_until   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, subject)
);
CREATE INDEX console_signin_failures_last_idx ON console_signin_failures (last_failure_at);

-- The Pools an admin operator may see and change (owners see every Pool).
CREATE TABLE operator_pool_assignments (
    operator_id uuid NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    pool_id     uuid NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operator_id, pool_id)
);
CREATE INDEX operator_pool_assignments_pool_idx ON operator_pool_assignments (pool_id);
