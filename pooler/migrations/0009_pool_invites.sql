-- Onboarding invites (issue 13): a link that lets whoever holds it add their ChatGPT account
-- to one Pool by device code, without an operator account. 24 hours, single use, revocable.
-- Secrets: the link's token is stored as a keyed digest (HMAC-SHA256 under the server
-- secret); the device sign-in's id (which, with the user code, fetches the authorization
-- code) is AES-256-GCM ciphertext under the instance keyring, bound to the invite's id.
CREATE TABLE pool_invites (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    pool_id                 uuid NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    token_digest            bytea NOT NULL CHECK (length(token_digest) = 32),
    created_by              text NOT NULL CHECK (char_length(created_by) <= 300),
    created_at              timestamptz NOT NULL DEFAULT now(),
    expires_at              timestamptz NOT NULL,
    used_at                 timestamptz,
    used_account_id         uuid REFERENCES upstream_accounts (id) ON DELETE SET NULL,
    revoked_at              timestamptz,
    -- The one device sign-in under way for this invite (all NULL when none).
    device_user_code        text CHECK (char_length(device_user_code) <= 64),
    device_verification_url text CHECK (char_length(device_verification_url) <= 2048),
    device_interval_s       double precision CHECK (device_interval_s > 0),
    device_expires_at       timestamptz,
    device_next_poll_at     timestamptz,
    device_key_version      integer,
    device_nonce            bytea CHECK (length(device_nonce) = 12),
    device_ciphertext       bytea,
    -- A start under way (the auth server is being asked for a code) until this time.
    device_claimed_until    timestamptz,
    device_starts           integer NOT NULL DEFAULT 0 CHECK (device_starts >= 0),
    -- How the last device sign-in ended without an account: shown on the page.
    device_outcome          text CHECK (device_outcome IN ('denied', 'expired', 'failed')),
    CONSTRAINT pool_invites_digest_key UNIQUE (token_digest),
    CONSTRAINT pool_invites_used_or_revoked CHECK (used_at IS NULL OR revoked_at IS NULL),
    CONSTRAINT pool_invites_device_whole
        CHECK ((device_ciphertext IS NULL) = (device_nonce IS NULL)
               AND (device_ciphertext IS NULL) = (device_key_version IS NULL)
               AND (device_ciphertext IS NULL) = (device_user_code IS NULL)
               AND (device_ciphertext IS NULL) = (device_expires_at IS NULL)
               AND (device_ciphertext IS NULL) = (device_next_poll_at IS NULL)
               AND (device_ciphertext IS NULL) = (device_interval_s IS NULL)
               AND (device_ciphertext IS NULL) = (device_verification_url IS NULL))
);
CREATE INDEX pool_invites_pool_idx ON pool_invites (pool_id, created_at DESC);
