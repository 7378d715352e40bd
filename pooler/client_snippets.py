"""How a client is pointed at this gateway: the Codex CLI `config.toml`, the OpenAI Python SDK
and curl, for a gateway URL and a Pool API key. The one source of this text: the console
shows it for a new key, and the README's client configuration shows it for
`http://127.0.0.1:4000` and `sk-cxp-...` (a unit test keeps the two the same)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

KEY_ENV: Final = "CODEX_POOLER_API_KEY"
README_BASE_URL: Final = "http://127.0.0.1:4000"
README_KEY: Final = "sk-cxp-..."
CURL_BODY: Final = (
    '{"model":"gpt-5.5","stream":true,"input":[{"type":"message","role":"user",'
    '"content":[{"type":"input_text","text":"hi"}]}]}'
)


@dataclass(frozen=True, slots=True)
class Snippet:
    title: str
    language: str  # the README's code-fence language
    text: str


def codex_config(base_url: str) -> str:
    return f"""# ~/.codex/config.toml
model_provider = "pooler"

[model_providers.pooler]
name = "OpenAI"                 # keeps remote compaction on
base_url = "{base_url}/backend-api/codex"
env_key = "{KEY_ENV}"
wire_api = "responses"
supports_websockets = true      # or false: plain HTTP + SSE
"""


def codex_shell(key: str) -> str:
    return f"""export {KEY_ENV}={key}
codex exec "Reply with exactly: ok"
"""


def openai_python(base_url: str, key: str) -> str:
    return f"""from openai import OpenAI

client = OpenAI(base_url="{base_url}/v1", api_key="{key}")
reply = client.chat.completions.create(
    model="gpt-5.5",
    messages=[{{"role": "user", "content": "hi"}}],
    stream=True,
    stream_options={{"include_usage": True}},
)
for chunk in reply:
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="")
"""


def curl(base_url: str, key: str) -> str:
    return f"""export {KEY_ENV}={key}
curl -N {base_url}/backend-api/codex/responses \\
  -H "Authorization: Bearer ${KEY_ENV}" \\
  -H 'Content-Type: application/json' \\
  -d '{CURL_BODY}'
"""


def snippets(base_url: str, key: str) -> list[Snippet]:
    """Every client snippet for `key` against the gateway at `base_url` (no trailing /)."""
    return [
        Snippet("Codex CLI: ~/.codex/config.toml", "toml", codex_config(base_url)),
        Snippet("Codex CLI: the key in your shell", "sh", codex_shell(key)),
        Snippet("OpenAI Python SDK", "python", openai_python(base_url, key)),
        Snippet("curl", "sh", curl(base_url, key)),
    ]


MCP_TOKEN_ENV: Final = "POOLER_MCP_TOKEN"


def codex_mcp(base_url: str, token: str) -> list[Snippet]:
    """The Codex CLI pointed at this gateway's operator MCP endpoint with an MCP token."""
    config = f"""# ~/.codex/config.toml
[mcp_servers.codex_pooler]
url = "{base_url}/mcp"
bearer_token_env_var = "{MCP_TOKEN_ENV}"
"""
    shell = f"""export {MCP_TOKEN_ENV}={token}
codex mcp list
"""
    return [
        Snippet("Codex CLI: ~/.codex/config.toml", "toml", config),
        Snippet("Codex CLI: the token in your shell", "sh", shell),
    ]
