-- OpenAI-compatible /v1 files and usage (issue 6): the metadata of files uploaded through
-- `POST /v1/files` (never their content: the bytes go to the upstream account and nowhere
-- else), and the index `GET /v1/usage` reads one key's recent request logs through.

-- A file belongs to the Pool it was uploaded through and lives on one upstream account
-- (its id is the upstream's); requests naming it are pinned there.
CREATE TABLE v1_files (
    id         text NOT NULL CHECK (char_length(id) BETWEEN 1 AND 200),
    pool_id    uuid NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    account_id uuid REFERENCES upstream_accounts (id) ON DELETE SET NULL,
    filename   text NOT NULL CHECK (char_length(filename) BETWEEN 1 AND 255),
    bytes      bigint NOT NULL CHECK (bytes >= 0),
    purpose    text NOT NULL CHECK (char_length(purpose) BETWEEN 1 AND 64),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pool_id, id)
);
CREATE INDEX v1_files_pool_created_idx ON v1_files (pool_id, created_at, id);

CREATE INDEX request_logs_key_created_idx ON request_logs (pool_id, key_prefix, created_at);
