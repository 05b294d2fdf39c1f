"""Fixtures shared by the lineage tests."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from lineage.signing import Signer, generate_key, load_signer, load_trusted_keys


class Keys(NamedTuple):
    """A trusted signer, its trusted-keys map, and a signer nobody trusts."""

    signer: Signer
    trusted: dict
    stranger: Signer


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    root = tmp_path_factory.mktemp("keys")
    generate_key(root / "ok.key.pem", root / "trusted", name="ok")
    generate_key(root / "stranger.key.pem", root / "elsewhere", name="stranger")
    return Keys(
        load_signer(root / "ok.key.pem"),
        load_trusted_keys(root / "trusted"),
        load_signer(root / "stranger.key.pem"),
    )
