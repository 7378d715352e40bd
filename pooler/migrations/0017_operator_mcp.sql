-- Operator MCP (issue 15): each operator's own MCP switch (off until they, or the CLI,
-- turn it on; the instance's `mcp.enabled` setting is the other gate), and no per-token
-- usage: the token's last-use time was never written and is dropped (the reference's
-- privacy choice: no usage, last IP or user agent per token).
ALTER TABLE operators ADD COLUMN mcp_enabled boolean NOT NULL DEFAULT false;
ALTER TABLE operator_mcp_tokens DROP COLUMN last_used_at;
