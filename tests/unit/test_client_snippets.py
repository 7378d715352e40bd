"""The client snippets the console shows for a new key are the README's own (one source,
`pooler.client_snippets`), and the key form's policy choices parse with the CLI's parser."""

from __future__ import annotations

import re
from pathlib import Path

from pooler import client_snippets
from pooler.admin_ui.api_keys_view import KeyForm, effort_choices
from pooler.store.keys import parse_effort_policy

README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"^```([a-z]*)\n(.*?)^```$", re.M | re.S)


def test_every_snippet_is_a_code_block_of_the_readme() -> None:
    blocks = {(lang, text) for lang, text in FENCE.findall(README.read_text())}
    shown = client_snippets.snippets(client_snippets.README_BASE_URL, client_snippets.README_KEY)
    for snippet in shown:
        assert (snippet.language, snippet.text) in blocks, snippet.title


def test_snippets_carry_the_key_and_the_gateway() -> None:
    url, key = "https://pool.example.com", "sk-cxp-abc"
    text = "\n".join(s.text for s in client_snippets.snippets(url, key))
    assert 'base_url = "https://pool.example.com/backend-api/codex"' in text
    assert 'OpenAI(base_url="https://pool.example.com/v1", api_key="sk-cxp-abc")' in text
    assert "curl -N https://pool.example.com/backend-api/codex/responses" in text


def test_every_effort_choice_parses_with_the_cli_parser() -> None:
    for value, _label in effort_choices():
        policy = parse_effort_policy(value)
        assert (policy is None) == (value == "none")


def test_a_refused_field_is_reported_beside_it() -> None:
    form = KeyForm(" spaced ", "", "max:extreme")
    assert not form.parse()
    assert set(form.errors) == {"name", "reasoning_effort"}
    ok = KeyForm("ok", "gpt-5.5, gpt-5.5 ,o3", "enforce:high")
    assert ok.parse() and ok.allowed_models == ["gpt-5.5", "o3"]
    assert ok.effort_policy is not None and ok.effort_policy.mode == "enforce"
