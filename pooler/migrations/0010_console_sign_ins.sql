-- The console's account sign-ins under way (issue 13): browser PKCE and device code, started
-- at /admin/upstreams/new/browser|device. Kept here rather than in one node's memory so any
-- gateway node on this database can continue a sign-in, and a restart loses none.
-- Secrets (the PKCE verifier, `state` and the authorize URL holding it; the device sign-in's
-- id) are AES-256-GCM ciphertext under the instance keyring, bound to the row's id and
-- session; they are wiped once the sign-in is over, when only the outcome stays until
-- `expires_at`. Rows are bounded per console session and expired ones are deleted by the
-- next start (`pooler.store.console_sign_ins`): no cleanup job.
CREATE TABLE console_sign_ins (
    id                      uuid PRIMARY KEY,
    session_id              uuid NOT NULL REFERENCES console_sessions (id) ON DELETE CASCADE,
    pool_id                 uuid NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    -- The account being re-linked: a sign-in for an account deleted meanwhile has no
    -- target (it must not turn into adding a new account), so it goes with it.
    relink_account_id       uuid REFERENCES upstream_accounts (id) ON DELETE CASCADE,
    kind                    text NOT NULL CHECK (kind IN ('browser', 'device')),
    created_at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at              timestamptz NOT NULL,
    -- The secrets while the sign-in is under way (all NULL once it is over).
    key_version             integer,
    nonce                   bytea CHECK (length(nonce) = 12),
    ciphertext              bytea CHECK (length(ciphertext) <= 8192),
    -- A device sign-in's public part (what the page shows) and its polling.
    device_user_code        text CHECK (char_length(device_user_code) <= 64),
    device_verification_url text CHECK (char_length(device_verification_url) <= 2048),
    device_interval_s       double precision CHECK (device_interval_s > 0),
    device_expires_at       timestamptz,
    next_poll_at            timestamptz,
    -- The outcome: the account added or re-linked, or the error shown.
    account_id              uuid REFERENCES upstream_accounts (id) ON DELETE CASCADE,
    created                 boolean,
    error                   text CHECK (char_length(error) <= 1000),
    CONSTRAINT console_sign_ins_secret_whole
        CHECK ((ciphertext IS NULL) = (nonce IS NULL)
               AND (ciphertext IS NULL) = (key_version IS NULL)),
    CONSTRAINT console_sign_ins_secret_until_over
        CHECK ((ciphertext IS NULL) = (account_id IS NOT NULL OR error IS NOT NULL)),
    CONSTRAINT console_sign_ins_one_outcome CHECK (account_id IS NULL OR error IS NULL),
    CONSTRAINT console_sign_ins_created_with_account
        CHECK ((account_id IS NULL) = (created IS NULL)),
    CONSTRAINT console_sign_ins_device_whole
        CHECK ((kind = 'device') = (device_user_code IS NOT NULL)
               AND (device_user_code IS NULL) = (device_verification_url IS NULL)
               AND (device_user_code IS NULL) = (device_interval_s IS NULL)
               AND (device_user_code IS NULL) = (device_expires_at IS NULL)
               AND (device_user_code IS NULL) = (next_poll_at IS NULL))
);
CREATE INDEX console_sign_ins_session_idx ON console_sign_ins (session_id, created_at);
CREATE INDEX console_sign_ins_expires_idx ON console_sign_ins (expires_at);
