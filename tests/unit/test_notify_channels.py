"""Each NOTIFY channel is named once, in `pooler.store.common`: every other module (the
gateway's listener, the stores, the tests) imports the constant, so a rename cannot leave a
listener on a channel nobody announces on."""

from __future__ import annotations

import ast
from pathlib import Path

import pooler
from pooler.store import common

ROOT = Path(pooler.__file__).parent.parent
CHANNELS = {
    value: name
    for name, value in vars(common).items()
    if name.endswith("_CHANNEL") and isinstance(value, str)
}
HOME = Path(common.__file__).resolve()


def channel_literals(path: Path) -> list[str]:
    """Where `path` spells a channel name (a string literal, or a SQL `NOTIFY`/`LISTEN`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            continue
        words = node.value.replace(",", " ").split()
        named = node.value in CHANNELS or (
            words[:1] in (["NOTIFY"], ["LISTEN"]) and any(w in CHANNELS for w in words)
        )
        if named:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    return found


def test_the_channels_are_the_ones_the_gateway_listens_on() -> None:
    assert set(CHANNELS.values()) == {
        "CONFIG_CHANNEL",
        "TOKENS_CHANNEL",
        "QUOTA_CHANNEL",
        "CONTINUITY_CHANNEL",
    }


def test_no_module_spells_a_channel_name_but_the_store_common_module() -> None:
    sources = [*ROOT.joinpath("pooler").rglob("*.py"), *ROOT.joinpath("tests").rglob("*.py")]
    sources += ROOT.joinpath("ops").rglob("*.py")
    spelled = [
        where for path in sources if path.resolve() != HOME for where in channel_literals(path)
    ]
    assert spelled == []
