"""A faithful fake of the ChatGPT Codex backend and its OAuth server (DESIGN §7).

state.py       EmulatorState: accounts, tokens, quota, faults, request log (no I/O)
accounts.py    one fake account; tokens.py its unsigned JWTs; usage.py its windows
prompt_cache.py  each account's prefix cache (what `cached_tokens` reports)
replies.py     what to answer, from the last input item; events.py the event sequence
faults.py      the scriptable fault plan
signin.py      sign-ins: authorization codes (PKCE) and device codes; signin_http.py serves them
app.py         the raw ASGI app (responses_http, ws, backend, oauth, control handlers)
server.py      Hypercorn trio serving and the `pooler emulator` entry
"""

from pooler.emulator.accounts import FakeAccount
from pooler.emulator.app import build_emulator_app
from pooler.emulator.authjson import auth_json_for, write_auth_json_files
from pooler.emulator.server import run_emulator_cli, serve_emulator
from pooler.emulator.state import EmulatorState

__all__ = [
    "EmulatorState",
    "FakeAccount",
    "auth_json_for",
    "build_emulator_app",
    "run_emulator_cli",
    "serve_emulator",
    "write_auth_json_files",
]
