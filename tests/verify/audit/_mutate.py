"""Hypothesis strategies that turn a good bundle into a hostile one.

Container mutations (byte flips, cuts, appended bytes, renamed members) test
the reading; JSON mutations of signed files, re-signed with the bundle's own
key and indexed anew, get past the signatures so that the deeper checks read
the mutated predicates.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile

from hypothesis import strategies as st

from lineage._canonical import canonical_json
from lineage.signing import Signer, sign_envelope
from tests.verify.audit._bundle import resigned
from verify.audit._files import INDEX, PREFIX

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
NAMES = st.sampled_from(
    ["", "a", "a/b", "../x", "/abs", "x\x1b[2J", "data/manifest.dsse.json/x", "n" * 300, "./a"]
) | st.text(max_size=20)


def _paths(value, prefix=()):
    """Every path (tuple of keys and indices) into a JSON value, the root included."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _set(doc, path, value):
    if not path:
        return None if value is _DELETE else value
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = None if value is _DELETE else value
    return doc


_DELETE = object()


@st.composite
def json_mutation(draw, files: dict[str, bytes], signer: Signer) -> bytes:
    """A signed file's statement with one value replaced or deleted, re-signed and re-indexed."""
    files = dict(files)
    signed = sorted(n for n in files if n.endswith(".dsse.json") and n != INDEX)
    name = draw(st.sampled_from([*signed, "models/ensemble.sig"]))
    outer = json.loads(files[name])
    envelope = outer["dsseEnvelope"] if name.endswith(".sig") else outer
    doc = json.loads(base64.b64decode(envelope["payload"]))
    path = draw(st.sampled_from(list(_paths(doc))))
    doc = _set(doc, path, draw(JSON | st.just(_DELETE)))
    raw = canonical_json(doc) if draw(st.booleans()) else json.dumps(doc).encode()
    new = sign_envelope(raw, signer, payload_type=envelope["payloadType"])
    if name.endswith(".sig"):
        outer["dsseEnvelope"] = new
    files[name] = json.dumps(outer if name.endswith(".sig") else new).encode()
    return resigned(files, signer)


@st.composite
def file_mutation(draw, files: dict[str, bytes], signer: Signer) -> bytes:
    """An unsigned file (ledger, leaves, anything) changed, removed or added; re-indexed."""
    files = dict(files)
    name = draw(st.sampled_from(sorted(files)))
    action = draw(st.sampled_from(["drop", "replace", "lines", "add"]))
    if action == "drop":
        del files[name]
    elif action == "replace":
        files[name] = draw(st.binary(max_size=64))
    elif action == "lines":
        lines = files[name].splitlines(keepends=True)
        if lines:
            del lines[draw(st.integers(0, len(lines) - 1))]
        files[name] = b"".join(lines)
    else:
        files[draw(NAMES.filter(lambda n: n and "\x00" not in n))] = draw(st.binary(max_size=16))
    return resigned(files, signer)


@st.composite
def container_mutation(draw, good: bytes, files: dict[str, bytes]) -> bytes:
    """The bundle's bytes flipped, cut or extended, or its members renamed."""
    action = draw(st.sampled_from(["flip", "cut", "append", "rename", "inner"]))
    if action == "flip":
        data = bytearray(good)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        return bytes(data)
    if action == "cut":
        return good[: draw(st.integers(0, len(good) - 1))]
    if action == "append":
        return good + draw(st.binary(min_size=1, max_size=600) | st.just(gzip.compress(b"x")))
    raw = gzip.decompress(good)
    if action == "inner":  # flip or cut the tar itself, in a valid gzip member
        cut = draw(st.integers(0, len(raw)))
        return gzip.compress(raw[:cut] + draw(st.binary(max_size=600)), mtime=0)
    renames = draw(st.dictionaries(st.sampled_from(sorted(files)), NAMES, min_size=1, max_size=3))
    bare = draw(st.booleans())  # a renamed member outside the prefix, or under it
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in files.items():
            new = renames.get(name)
            info = tarfile.TarInfo(
                f"{PREFIX}/{name}" if new is None else new if bare else f"{PREFIX}/{new}"
            )
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(out.getvalue(), mtime=0)
