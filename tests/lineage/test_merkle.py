"""Merkle tree: known answers from an independent implementation, oracles, proofs.

The oracle is the RFC 6962 section 2.1 definition written as directly as
possible (recursive MTH and PATH over leaf *data*, hashing with hashlib
here), so the streaming ``root_of`` and the level-wise ``MerkleTree`` are
checked against the text of the standard rather than against each other.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import unicodedata
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lineage import merkle
from lineage._canonical import text_sha256
from lineage.errors import ProofError
from lineage.merkle import (
    EMPTY_ROOT,
    InclusionProof,
    LeafIndex,
    MerkleTree,
    NonInclusionProof,
    leaf_data,
    leaf_hash,
    record_leaf_hash,
    root_of,
    sort_key,
    verify_inclusion,
)

# The vectors of an independent implementation (transparency-dev/merkle's testdata,
# Apache-2.0), vendored so the known-answer tests always run; the project's
# ../shared copy is preferred when it is there.
_SHARED = Path(__file__).resolve().parents[3] / "shared" / "testvectors" / "rfc6962" / "inclusion"
_VENDORED = Path(__file__).resolve().parent / "vectors" / "rfc6962" / "inclusion"
INCLUSION = _SHARED if _SHARED.is_dir() else _VENDORED


# -- reference: RFC 6962 section 2.1, verbatim ---------------------------------


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(data: list[bytes]) -> bytes:
    n = len(data)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = _split(n)
    return hashlib.sha256(b"\x01" + ref_mth(data[:k]) + ref_mth(data[k:])).digest()


def ref_path(m: int, data: list[bytes]) -> list[bytes]:
    n = len(data)
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*ref_path(m, data[:k]), ref_mth(data[k:])]
    return [*ref_path(m - k, data[k:]), ref_mth(data[:k])]


def _data(n: int) -> list[bytes]:
    return [b"leaf %d" % i for i in range(n)]


def _hex_digest(i: int) -> str:
    return hashlib.sha256(b"record %d" % i).hexdigest()


# -- known answers ---------------------------------------------------------------

# The eight leaves and roots of the RFC 6962 reference tests
# (google/certificate-transparency, merkle_tree_test.cc), also used by
# transparency-dev/merkle.
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

# Five manifest leaves; the root pins the leaf encoding (id || 0x00 || digest),
# the sort order and the domain separation. Computed with ref_mth above.
KNOWN_LEAVES = [
    ("wiki/0002", _hex_digest(2)),
    ("books/0001", _hex_digest(1)),
    ("wiki/0010", _hex_digest(10)),
    ("books/0000", _hex_digest(0)),
    ("café/0003", _hex_digest(3)),
]
KNOWN_ROOT = "8af5c63d7df6a575021772b7bdb9c2ee77896084452fdc77eb1833901089098e"


def test_empty_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_of([]) == (EMPTY_ROOT, 0)
    assert MerkleTree([]).root == EMPTY_ROOT


@pytest.mark.parametrize("n", range(1, len(CT_LEAVES) + 1))
def test_certificate_transparency_roots(n: int) -> None:
    hashes = [leaf_hash(d) for d in CT_LEAVES[:n]]
    assert root_of(hashes) == (bytes.fromhex(CT_ROOTS[n - 1]), n)
    assert MerkleTree(hashes).root.hex() == CT_ROOTS[n - 1]


def test_known_manifest_root() -> None:
    index = LeafIndex(KNOWN_LEAVES)
    ordered = sorted(KNOWN_LEAVES, key=lambda leaf: leaf[0].encode("utf-8"))
    data = [rid.encode("utf-8") + b"\x00" + bytes.fromhex(sha) for rid, sha in ordered]
    assert ref_mth(data).hex() == KNOWN_ROOT
    assert index.root.hex() == KNOWN_ROOT
    assert [rid for rid, _ in index.leaves] == [
        "books/0000",
        "books/0001",
        "café/0003",
        "wiki/0002",
        "wiki/0010",
    ]


def test_leaf_encoding() -> None:
    digest = _hex_digest(0)
    assert leaf_data("a/1", digest) == b"a/1\x00" + bytes.fromhex(digest)
    assert (
        record_leaf_hash("a/1", digest)
        == hashlib.sha256(b"\x00a/1\x00" + bytes.fromhex(digest)).digest()
    )


leaf_texts = st.text(
    st.characters(exclude_categories=["Cs"]) | st.sampled_from(["\r", "\n", "e", "\u0301", "Å"]),
    max_size=20,
)


@settings(max_examples=300, deadline=None)
@given(text=leaf_texts)
def test_leaf_digest_is_sha256_of_nfc_text_with_lf(text: str) -> None:
    """The digest in a leaf, by its definition (text_sha256 skips the work for plain ASCII)."""
    canonical = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    assert text_sha256(text) == hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# -- transparency-dev/merkle inclusion vectors ------------------------------------


def _vector_params() -> list:
    files = sorted(INCLUSION.rglob("*.json"))
    return [pytest.param(p, id=str(p.relative_to(INCLUSION))) for p in files]


def _b64(value: str | None) -> bytes:
    """The vectors encode Go's nil/empty []byte as null or "": both are no bytes."""
    return base64.b64decode(value) if value else b""


@pytest.mark.parametrize("path", _vector_params())
def test_inclusion_vector(path: Path) -> None:
    v = json.loads(path.read_text())
    args = (
        _b64(v["leafHash"]),
        v["leafIdx"],
        v["treeSize"],
        [_b64(h) for h in v["proof"] or []],
        _b64(v["root"]),
    )
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


def test_vectors_are_all_there() -> None:
    files = list(INCLUSION.rglob("*.json"))
    assert len(files) == 98
    assert sum(not json.loads(p.read_text())["wantErr"] for p in files) == 6


@pytest.mark.parametrize(
    ("leaf", "proof"),
    [
        (b"", []),
        (b"\x00" * 31, []),
        (b"\x00" * 33, []),
    ],
)
def test_inclusion_rejects_hashes_of_the_wrong_size(leaf: bytes, proof: list[bytes]) -> None:
    root = leaf  # a one-leaf tree whose root is its leaf: only the size is wrong
    with pytest.raises(ProofError, match="32 bytes"):
        verify_inclusion(leaf, 0, 1, proof, root)


def test_inclusion_rejects_proof_hash_of_the_wrong_size() -> None:
    tree = MerkleTree([leaf_hash(d) for d in _data(2)])
    with pytest.raises(ProofError, match="32 bytes"):
        verify_inclusion(tree.levels[0][0], 0, 2, [b"\x01" * 31], tree.root)


# -- oracles ------------------------------------------------------------------


@pytest.mark.parametrize("n", range(71))
def test_streaming_root_matches_tree_and_reference(n: int) -> None:
    data = _data(n)
    hashes = [leaf_hash(d) for d in data]
    expected = ref_mth(data)
    assert root_of(hashes) == (expected, n)
    assert root_of(iter(hashes)) == (expected, n)  # a one-pass iterator is enough
    assert MerkleTree(hashes).root == expected


@pytest.mark.parametrize("n", [4095, 4096, 4097, 8192 + 4096 + 1])
def test_streaming_root_across_batches(n: int) -> None:
    """root_of hashes whole batches of 4096 leaves at once; the tree must not notice."""
    data = _data(n)
    hashes = [leaf_hash(d) for d in data]
    assert root_of(iter(hashes)) == (ref_mth(data), n)


@pytest.mark.parametrize("n", range(71))
def test_streaming_root_with_tiny_batches(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(merkle, "_BATCH_HEIGHT", 2)
    data = _data(n)
    assert root_of(leaf_hash(d) for d in data) == (ref_mth(data), n)


@pytest.mark.parametrize("n", range(1, 41))
def test_every_inclusion_proof_verifies(n: int) -> None:
    leaves = [(f"r/{i:03d}", _hex_digest(i)) for i in range(n)]
    index = LeafIndex(leaves)
    data = [leaf_data(rid, sha) for rid, sha in index.leaves]
    assert index.root == ref_mth(data)
    for i, (rid, _) in enumerate(index.leaves):
        assert index.tree.inclusion_proof(i) == ref_path(i, data)
        proof = index.inclusion(rid)
        assert (proof.leaf_index, proof.tree_size) == (i, n)
        proof.verify(index.root)


def test_inclusion_proof_fails_under_another_root() -> None:
    index = LeafIndex([(f"r/{i}", _hex_digest(i)) for i in range(5)])
    other = LeafIndex([(f"r/{i}", _hex_digest(i + 1)) for i in range(5)])
    with pytest.raises(ProofError):
        index.inclusion("r/3").verify(other.root)


def test_inclusion_proof_of_a_changed_digest_fails() -> None:
    index = LeafIndex([(f"r/{i}", _hex_digest(i)) for i in range(5)])
    proof = replace(index.inclusion("r/3"), sha256=_hex_digest(99))
    with pytest.raises(ProofError):
        proof.verify(index.root)


def test_inclusion_of_an_absent_id_is_refused() -> None:
    index = LeafIndex([(f"r/{i}", _hex_digest(i)) for i in range(3)])
    with pytest.raises(KeyError):
        index.inclusion("r/9")


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(ProofError, match="duplicate"):
        LeafIndex([("a", _hex_digest(0)), ("a", _hex_digest(1))])


# -- non-inclusion -------------------------------------------------------------

IDS = ["b", "d", "f", "h", "j"]


@pytest.fixture
def index() -> LeafIndex:
    return LeafIndex([(rid, _hex_digest(i)) for i, rid in enumerate(IDS)])


@pytest.mark.parametrize("absent", ["a", "c", "e", "g", "i", "k", "", "b0", "j\x00", "z" * 40])
def test_absent_ids_get_verifying_non_inclusion_proofs(index: LeafIndex, absent: str) -> None:
    proof = index.non_inclusion(absent)
    proof.verify(index.root)
    assert proof.tree_size == len(IDS)


def test_edges_have_one_neighbour(index: LeafIndex) -> None:
    before, after = index.non_inclusion("a"), index.non_inclusion("k")
    assert before.left is None and before.right.leaf_index == 0
    assert after.right is None and after.left.leaf_index == len(IDS) - 1


def test_empty_tree_proves_every_absence() -> None:
    empty = LeafIndex([])
    proof = empty.non_inclusion("anything")
    proof.verify(EMPTY_ROOT)
    with pytest.raises(ProofError):
        proof.verify(hashlib.sha256(b"not empty").digest())


@pytest.mark.parametrize("present", IDS)
def test_present_id_gets_no_non_inclusion_proof(index: LeafIndex, present: str) -> None:
    with pytest.raises(KeyError):
        index.non_inclusion(present)


@pytest.mark.parametrize("present", IDS)
def test_forged_non_inclusion_of_a_present_id_fails(index: LeafIndex, present: str) -> None:
    """Borrow the neighbours an absent id next to ``present`` would get; they do not fit."""
    for absent in (present[0] + "0", chr(ord(present[0]) - 1)):
        honest = index.non_inclusion(absent)
        with pytest.raises(ProofError):
            replace(honest, record_id=present).verify(index.root)


def _proof(index: LeafIndex, i: int) -> InclusionProof:
    return index.inclusion(index.leaves[i][0])


def test_non_adjacent_neighbours_fail(index: LeafIndex) -> None:
    forged = NonInclusionProof("e", len(IDS), _proof(index, 0), _proof(index, 3))
    with pytest.raises(ProofError, match="adjacent"):
        forged.verify(index.root)


@pytest.mark.parametrize("outside", ["a", "c0", "e", "z"])
def test_neighbours_that_do_not_bracket_the_id_fail(index: LeafIndex, outside: str) -> None:
    forged = NonInclusionProof(outside, len(IDS), _proof(index, 2), _proof(index, 3))
    with pytest.raises(ProofError, match="between"):
        forged.verify(index.root)


def test_swapped_neighbours_fail(index: LeafIndex) -> None:
    forged = NonInclusionProof("g", len(IDS), _proof(index, 3), _proof(index, 2))
    with pytest.raises(ProofError):
        forged.verify(index.root)


def test_wrong_tree_size_fails(index: LeafIndex) -> None:
    honest = index.non_inclusion("e")
    with pytest.raises(ProofError, match="tree size"):
        replace(honest, tree_size=len(IDS) + 1).verify(index.root)
    resized = replace(honest.left, tree_size=len(IDS) + 1)
    with pytest.raises(ProofError):
        replace(honest, tree_size=len(IDS) + 1, left=resized).verify(index.root)


def test_shrunken_tree_cannot_move_the_edge(index: LeafIndex) -> None:
    """Claiming the tree ends at leaf 2 would make "i" look absent after the last leaf."""
    left = replace(_proof(index, 2), tree_size=3)
    with pytest.raises(ProofError):
        NonInclusionProof("i", 3, left, None).verify(index.root)


def test_wrong_root_fails(index: LeafIndex) -> None:
    other = LeafIndex([(rid, _hex_digest(i + 1)) for i, rid in enumerate(IDS)])
    for absent in ("a", "e", "k"):
        with pytest.raises(ProofError):
            index.non_inclusion(absent).verify(other.root)


def test_left_edge_proof_must_be_the_first_leaf(index: LeafIndex) -> None:
    forged = NonInclusionProof("c", len(IDS), None, _proof(index, 1))
    with pytest.raises(ProofError, match="first leaf"):
        forged.verify(index.root)


def test_right_edge_proof_must_be_the_last_leaf(index: LeafIndex) -> None:
    forged = NonInclusionProof("i", len(IDS), _proof(index, 3), None)
    with pytest.raises(ProofError, match="last leaf"):
        forged.verify(index.root)


def test_edge_proof_on_the_wrong_side_of_the_id_fails(index: LeafIndex) -> None:
    with pytest.raises(ProofError):
        NonInclusionProof("c", len(IDS), None, _proof(index, 0)).verify(index.root)
    with pytest.raises(ProofError):
        NonInclusionProof("i", len(IDS), _proof(index, 4), None).verify(index.root)


def test_no_neighbours_in_a_non_empty_tree_fails(index: LeafIndex) -> None:
    with pytest.raises(ProofError, match="at least one"):
        NonInclusionProof("c", len(IDS), None, None).verify(index.root)


def test_neighbours_in_an_empty_tree_fail(index: LeafIndex) -> None:
    with pytest.raises(ProofError):
        NonInclusionProof("c", 0, _proof(index, 0), None).verify(EMPTY_ROOT)


# -- serialization ---------------------------------------------------------------


@pytest.mark.parametrize("absent", ["a", "e", "k"])
def test_proofs_round_trip_through_json(index: LeafIndex, absent: str) -> None:
    proof = index.non_inclusion(absent)
    again = NonInclusionProof.from_dict(json.loads(json.dumps(proof.to_dict())))
    assert again == proof
    again.verify(index.root)
    inclusion = index.inclusion("f")
    assert InclusionProof.from_dict(json.loads(json.dumps(inclusion.to_dict()))) == inclusion


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: {k: v for k, v in d.items() if k != "tree_size"},
        lambda d: {**d, "tree_size": "many"},
        lambda d: {**d, "left": {"record_id": "x"}},
        lambda d: {**d, "right": 7},
        lambda d: [],
    ],
)
def test_malformed_non_inclusion_dict_is_a_proof_error(index: LeafIndex, mangle) -> None:
    with pytest.raises(ProofError, match="malformed"):
        NonInclusionProof.from_dict(mangle(index.non_inclusion("e").to_dict()))


@pytest.mark.parametrize(
    "field_value",
    [("hashes", ["not base64!"]), ("hashes", [7]), ("sha256", "zz"), ("leaf_index", -1)],
)
def test_malformed_inclusion_fields_fail_verification(index: LeafIndex, field_value) -> None:
    name, value = field_value
    d = {**index.inclusion("f").to_dict(), name: value}
    with pytest.raises(ProofError):
        InclusionProof.from_dict(d).verify(index.root)


# -- properties ----------------------------------------------------------------

record_ids = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)


@settings(max_examples=60, deadline=None)
@given(ids=st.sets(record_ids, max_size=40), probe=record_ids)
def test_random_id_sets(ids: set[str], probe: str) -> None:
    leaves = [(rid, hashlib.sha256(rid.encode("utf-8")).hexdigest()) for rid in ids]
    index = LeafIndex(leaves)
    data = [leaf_data(rid, sha) for rid, sha in index.leaves]
    assert index.root == ref_mth(data)
    assert root_of(record_leaf_hash(rid, sha) for rid, sha in index.leaves) == (
        index.root,
        len(ids),
    )
    for rid in ids:
        index.inclusion(rid).verify(index.root)
    if probe in ids:
        with pytest.raises(KeyError):
            index.non_inclusion(probe)
    else:
        proof = index.non_inclusion(probe)
        NonInclusionProof.from_dict(proof.to_dict()).verify(index.root)


@settings(max_examples=60, deadline=None)
@given(ids=st.sets(record_ids, min_size=1, max_size=20), data=st.data())
def test_random_forged_non_inclusion_fails(ids: set[str], data: st.DataObject) -> None:
    """Any pair of real leaves presented as neighbours of a present id is rejected."""
    index = LeafIndex([(rid, hashlib.sha256(rid.encode()).hexdigest()) for rid in ids])
    n = len(ids)
    present = data.draw(st.sampled_from(sorted(ids)))
    sides = st.one_of(st.none(), st.integers(0, n - 1).map(lambda i: _proof(index, i)))
    left, right = data.draw(sides), data.draw(sides)
    with pytest.raises(ProofError):
        NonInclusionProof(present, n, left, right).verify(index.root)


@settings(max_examples=100, deadline=None)
@given(a=record_ids, b=record_ids)
def test_utf8_order_is_code_point_order(a: str, b: str) -> None:
    """Sorting ids as str gives the same leaf order as sorting their UTF-8 bytes."""
    assume(a != b)
    assert (a < b) == (sort_key(a) < sort_key(b))


# What json.loads can hand over, with the awkward values drawn often: "\ud800"
# decodes to a lone surrogate, 1e999 to inf.
ODD_VALUES = [float("inf"), float("-inf"), float("nan"), "\ud800", 2**64, -1, "", True, None]
json_scalars = st.sampled_from(ODD_VALUES) | st.integers() | st.floats() | st.text(max_size=8)
json_values = (
    json_scalars
    | st.lists(json_scalars, max_size=3)
    | st.dictionaries(st.text(max_size=4), json_scalars, max_size=2)
)
PROOF_FIELDS = ["schema_version", "record_id", "sha256", "leaf_index", "tree_size", "hashes"]
mutations = st.tuples(
    st.sampled_from([None, "left", "right"]), st.sampled_from(PROOF_FIELDS), json_values
)


@settings(max_examples=200, deadline=None)
@given(st.lists(mutations, min_size=1, max_size=3))
def test_mangled_proof_dicts_raise_only_proof_errors(changes: list) -> None:
    """Whatever a proof file holds, reading and verifying it fails only with ProofError."""
    index = LeafIndex([("b", _hex_digest(0)), ("d", _hex_digest(1))])
    d = index.non_inclusion("c").to_dict()
    for where, field, value in changes:
        (d[where] if where else d)[field] = value
    with contextlib.suppress(ProofError):
        NonInclusionProof.from_dict(d).verify(index.root)


@pytest.mark.parametrize(
    ("where", "field", "value"),
    [
        (None, "tree_size", float("inf")),
        ("left", "leaf_index", float("-inf")),
        (None, "record_id", "\ud800"),
        ("right", "record_id", "d\udfff"),
    ],
)
def test_json_oddities_in_proofs_are_proof_errors(where, field, value) -> None:
    """Regressions: int(inf) raised OverflowError, a lone surrogate UnicodeEncodeError."""
    d = LeafIndex([("b", _hex_digest(0)), ("d", _hex_digest(1))]).non_inclusion("c").to_dict()
    (d[where] if where else d)[field] = value
    with pytest.raises(ProofError):
        NonInclusionProof.from_dict(d).verify(EMPTY_ROOT)
