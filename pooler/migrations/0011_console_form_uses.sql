-- One-time console forms (issue 13): a form whose answer shows a secret once (a new or
-- rotated API key, an invite link, a temporary password, recovery codes) carries a random
-- token made when it is rendered; the POST claims it here in the transaction that does the
-- action, so a reload that re-POSTs the form does nothing a second time, on any node.
-- `digest` is a keyed digest (HMAC-SHA256 under the server secret) of the token. A row goes
-- with its session (ON DELETE CASCADE); a session keeps at most its newest 100 (the store
-- trims on each claim).
CREATE TABLE console_form_uses (
    session_id  uuid NOT NULL REFERENCES console_sessions (id) ON DELETE CASCADE,
    digest      bytea NOT NULL CHECK (length(digest) = 32),
    action      text NOT NULL CHECK (char_length(action) <= 64),
    target_type text NOT NULL CHECK (char_length(target_type) <= 32),
    target_id   uuid,
    used_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, digest)
);
