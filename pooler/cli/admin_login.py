"""`pooler admin account login --pool NAME [--device-code]`: sign a ChatGPT account in and
add it to the Pool (or re-link it when the gateway knows it already).

Browser PKCE (the default): the command prints the authorize URL; the operator signs in in
any browser, copies the URL of the page it lands on (http://localhost:1455/auth/callback...,
which does not load) and pastes it on standard input. `--device-code`: the command prints a
one-time code and where to enter it, and waits until the sign-in is done, refused or
expired. Prompts go to stderr, the result to stdout (`--json` for JSON). The auth server is
CODEX_POOLER_AUTH_BASE_URL (the emulator's in tests).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx
import trio

from pooler.cli.common import CommandError, emit, plain, run_in_store, with_json
from pooler.config import load_config
from pooler.crypto import Keyring
from pooler.store import pools
from pooler.store.sign_in import add_signed_in_account
from pooler.upstream.oauth_login import (
    HTTP_TIMEOUT_S,
    MAX_CALLBACK_CHARS,
    SignInError,
    SignInTokens,
    finish_browser_sign_in,
    start_browser_sign_in,
    start_device_sign_in,
    wait_for_device_sign_in,
)


def register_login(account: Any) -> None:
    login = account.add_parser(
        "login", help="sign a ChatGPT account in (browser or device code) and add it to a Pool"
    )
    login.add_argument("--pool", required=True)
    login.add_argument(
        "--device-code",
        action="store_true",
        help="sign in with a one-time code instead of pasting the browser's callback URL",
    )
    login.add_argument("--label", help="the account's label (default: its email)")
    with_json(login).set_defaults(handler=account_login)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def account_login(args: argparse.Namespace) -> int:
    config = load_config()
    keyring = Keyring(config.upstream_secret_key, config.upstream_secret_keys_old)
    run_in_store(lambda conn: pools.get_pool(conn, args.pool))  # refuse before signing in
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
        try:
            if args.device_code:
                tokens = _device_sign_in(http, config.auth_base_url)
            else:
                tokens = _browser_sign_in(http, config.auth_base_url)
        except SignInError as exc:
            raise CommandError(f"sign-in failed: {exc.message}") from None
    method = "device_code" if args.device_code else "browser"
    added = run_in_store(
        lambda conn: add_signed_in_account(
            conn, keyring, args.pool, tokens, method=method, label=args.label, actor="cli"
        )
    )
    account = added.account
    done = "added to" if added.created else "already known: re-linked in"
    text = f"account {account.label} ({account.email or '-'}) {done} {args.pool}"
    return emit(args, {**plain(account), "created": added.created}, text)


def _browser_sign_in(http: httpx.Client, auth_base_url: str) -> SignInTokens:
    sign_in = start_browser_sign_in(auth_base_url)
    say("Open this URL in a browser and sign in with ChatGPT:\n")
    say(f"  {sign_in.authorize_url}\n")
    say(
        f"The browser then lands on {sign_in.redirect_uri}?code=... (a page that does not"
        " load). Copy that page's whole URL from the address bar and paste it here:"
    )
    pasted = sys.stdin.readline(MAX_CALLBACK_CHARS + 2)
    if not pasted.strip():
        raise CommandError("no callback URL on standard input")
    return finish_browser_sign_in(http, auth_base_url, sign_in, pasted)


def _device_sign_in(http: httpx.Client, auth_base_url: str) -> SignInTokens:
    device = start_device_sign_in(http, auth_base_url)
    minutes = max(1, round(device.seconds_left() / 60))
    say(f"Open {device.verification_url} in a browser, sign in with ChatGPT and enter the code\n")
    say(f"  {device.user_code}\n")
    say(f"(it expires in about {minutes} minutes; never share it). Waiting for the sign-in...")
    return trio.run(wait_for_device_sign_in, http, auth_base_url, device)
