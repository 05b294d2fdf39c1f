"""Fuzz ``exante audit verify`` over mutated bundles: exit 0, 1 or 3, never a traceback.

The examples are bounded (the default test run stays fast); raise
``max_examples`` locally to search longer. The same strategies run over the
real pipeline's bundle in ``tests/test_audit.py``.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exante.cli import main
from tests.verify.audit import _bundle
from tests.verify.audit._bundle import resigned
from tests.verify.audit._mutate import container_mutation, file_mutation, json_mutation

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def run_verify(data: bytes, where: Path, *keys: Path) -> tuple[int, str, str]:
    """``exante audit verify`` in-process on ``data``; the exit code and what it printed."""
    path = where / "fuzzed.tar.gz"
    path.write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    args = ["audit", "verify", str(path)] + [a for k in keys for a in ("--key", str(k))]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def assert_handled(code: int, out: str, err: str) -> None:
    assert code in (0, 1, 3) and "Traceback" not in err, err
    assert "\x1b" not in out + err


class _Quiet(tuple):
    """The fixture's value, without a 33 kB repr in hypothesis's report."""

    def __repr__(self) -> str:
        return "<the small bundle>"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    built = _bundle.build(tmp_path_factory.mktemp("fuzz"))
    return _Quiet((built, resigned(built.files, built.signer), tmp_path_factory.mktemp("runs")))


@FUZZ
@given(data=st.data())
def test_container_mutations_exit_0_1_or_3(small, data):
    built, good, where = small
    assert_handled(*run_verify(data.draw(container_mutation(good, built.files)), where))


@FUZZ
@given(data=st.data())
def test_resigned_json_mutations_exit_0_1_or_3(small, data):
    built, _, where = small
    code, out, err = run_verify(data.draw(json_mutation(built.files, built.signer)), where,
                                built.pub)  # fmt: skip
    assert_handled(code, out, err)


@FUZZ
@given(data=st.data())
def test_resigned_file_mutations_exit_0_1_or_3(small, data):
    built, _, where = small
    assert_handled(*run_verify(data.draw(file_mutation(built.files, built.signer)), where))
