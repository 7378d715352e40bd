-- What a request log's detail page shows beyond the first rows (issue 14): metadata only.
-- client_request_id: the client's own id for the request (x-client-request-id, bounded);
-- client_ip: the address as resolved under the trusted-proxy rules; request_bytes /
-- response_bytes: sizes on the client side of the gateway; routing: how the account was
-- chosen (strategy, the candidates considered and each one's verdict; never a secret).
ALTER TABLE request_logs
    ADD COLUMN client_request_id text CHECK (char_length(client_request_id) <= 200),
    ADD COLUMN client_ip         text CHECK (char_length(client_ip) <= 64),
    ADD COLUMN request_bytes     bigint CHECK (request_bytes >= 0),
    ADD COLUMN response_bytes    bigint CHECK (response_bytes >= 0),
    ADD COLUMN routing           jsonb;

-- Each attempt's time to its first byte from the upstream.
ALTER TABLE request_attempts ADD COLUMN ttfb_ms numeric;
