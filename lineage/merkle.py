"""RFC 6962 Merkle tree over a manifest's records, with inclusion and non-inclusion proofs.

Leaves are ``(record_id, sha256)`` pairs sorted by the UTF-8 bytes of the
record id; a leaf's data is ``record_id || 0x00 || digest`` and it is hashed
with RFC 6962 domain separation (``0x00`` for leaves, ``0x01`` for nodes), so a
leaf can never be passed off as a node. Because the leaves are sorted, two
adjacent leaves that bracket an id prove that the id is absent: that is the
non-inclusion proof a deletion receipt carries.

Verification follows RFC 9162 section 2.1.3.2 (the algorithm of the
transparency-dev/merkle implementation, whose vectors the tests replay).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice

from lineage._shape import shown
from lineage.errors import ProofError

_LEAF = b"\x00"
_NODE = b"\x01"
_sha256 = hashlib.sha256
HASH_SIZE = 32
EMPTY_ROOT = _sha256(b"").digest()
_BATCH_HEIGHT = 12  # root_of hashes perfect subtrees of 4096 leaves level by level


def leaf_data(record_id: str, sha256: str) -> bytes:
    """The bytes a record contributes to the tree."""
    return record_id.encode("utf-8") + b"\x00" + bytes.fromhex(sha256)


def leaf_hash(data: bytes) -> bytes:
    return _sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(_NODE + left + right).digest()


def record_leaf_hash(record_id: str, sha256: str) -> bytes:
    """``leaf_hash(leaf_data(record_id, sha256))``, inlined: it runs once per record."""
    return _sha256(_LEAF + record_id.encode("utf-8") + b"\x00" + bytes.fromhex(sha256)).digest()


def sort_key(record_id: str) -> bytes:
    """Leaves are ordered by the UTF-8 bytes of the record id."""
    return record_id.encode("utf-8")


def root_of(leaf_hashes: Iterable[bytes]) -> tuple[bytes, int]:
    """Root and size of the tree over ``leaf_hashes``, in one streaming pass.

    Memory is O(log n): a stack of perfect subtree roots, merged like a binary
    counter, then folded right to left (RFC 6962 splits at the largest power of
    two below n, which is exactly that fold). Leaves are taken in batches of
    4096, whose perfect subtree is hashed level by level (a batch enters the
    counter as one node of height 12): the same tree, with less Python per hash.
    """
    stack: list[tuple[int, bytes]] = []  # (height, hash)
    n = 0
    leaves = iter(leaf_hashes)
    while batch := list(islice(leaves, 1 << _BATCH_HEIGHT)):
        n += len(batch)
        if len(batch) == 1 << _BATCH_HEIGHT:
            _push(stack, _perfect_root(batch), _BATCH_HEIGHT)
        else:  # the tail: fewer leaves than a batch, one at a time
            for h in batch:
                _push(stack, h, 0)
    if not stack:
        return EMPTY_ROOT, 0
    root = stack.pop()[1]
    while stack:
        root = node_hash(stack.pop()[1], root)
    return root, n


def _push(stack: list[tuple[int, bytes]], h: bytes, height: int) -> None:
    """Add a perfect subtree of ``height`` to the counter, merging equal heights."""
    while stack and stack[-1][0] == height:
        h = _sha256(_NODE + stack.pop()[1] + h).digest()
        height += 1
    stack.append((height, h))


def _pairs_up(level: Sequence[bytes]) -> list[bytes]:
    """The level above: each pair of siblings hashed (an odd last node is left out)."""
    it = iter(level)
    return [_sha256(_NODE + a + b).digest() for a, b in zip(it, it, strict=False)]


def _perfect_root(level: list[bytes]) -> bytes:
    """Root of a perfect tree (``len(level)`` is a power of two)."""
    while len(level) > 1:
        level = _pairs_up(level)
    return level[0]


class MerkleTree:
    """All levels of a tree, kept in memory to answer proofs for many leaves."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self.levels: list[list[bytes]] = [list(leaf_hashes)]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            above = _pairs_up(below)
            if len(below) % 2:
                above.append(below[-1])  # an odd node is promoted unchanged
            self.levels.append(above)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    @property
    def root(self) -> bytes:
        return self.levels[-1][0] if self.size else EMPTY_ROOT

    def inclusion_proof(self, index: int) -> list[bytes]:
        """Audit path for leaf ``index``, bottom up (RFC 6962 section 2.1.1)."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf {index} is outside a tree of {self.size}")
        proof = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                proof.append(level[sibling])
            index //= 2
        return proof


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise :class:`ProofError` unless ``proof`` places ``leaf`` at ``index`` under ``root``."""
    if computed_root(leaf, index, size, proof) != root:
        raise ProofError("inclusion proof does not lead to the signed root")


def computed_root(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root ``proof`` leads to from ``leaf`` at ``index`` (RFC 9162 section 2.1.3.2).

    Every hash must be 32 bytes: otherwise an empty leaf with an empty proof
    would "lead" to an empty root.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    if len(leaf) != HASH_SIZE or any(len(h) != HASH_SIZE for h in proof):
        raise ProofError(f"leaf and proof hashes must be {HASH_SIZE} bytes (SHA-256)")
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    if len(proof) != inner + border:
        raise ProofError(f"proof has {len(proof)} hashes; a tree of {size} needs {inner + border}")
    h = leaf
    for i, sibling in enumerate(proof[:inner]):
        h = node_hash(h, sibling) if (index >> i) & 1 == 0 else node_hash(sibling, h)
    for sibling in proof[inner:]:
        h = node_hash(sibling, h)
    return h


# -- serializable proofs ------------------------------------------------------


def _b64(hashes: Iterable[bytes]) -> tuple[str, ...]:
    return tuple(base64.b64encode(h).decode("ascii") for h in hashes)


def _unb64(hashes: Iterable[str]) -> list[bytes]:
    try:
        return [base64.b64decode(h, validate=True) for h in hashes]
    except (ValueError, TypeError) as exc:
        raise ProofError(f"proof hash is not base64: {exc}") from None


def _why(exc: Exception) -> str:
    """What is wrong with a proof, without quoting it (a value could be anything)."""
    if isinstance(exc, KeyError):
        return f"it lacks {shown(exc.args[0] if exc.args else None)}"
    return f"a field has the wrong type or value ({type(exc).__name__})"


def _utf8_id(record_id: str) -> str:
    """``record_id``, if it has UTF-8 bytes to hash (a lone surrogate from JSON has none)."""
    try:
        record_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ProofError(f"proof record id {shown(record_id)} is not valid Unicode") from None
    return record_id


@dataclass(frozen=True)
class InclusionProof:
    """A record's leaf, its position and its audit path in a tree of ``tree_size``."""

    record_id: str
    sha256: str
    leaf_index: int
    tree_size: int
    hashes: tuple[str, ...]
    schema_version: int = 1

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "record_id": self.record_id,
            "sha256": self.sha256,
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "hashes": list(self.hashes),
        }

    @classmethod
    def from_dict(cls, d: dict) -> InclusionProof:
        try:
            return cls(
                record_id=str(d["record_id"]),
                sha256=str(d["sha256"]),
                leaf_index=int(d["leaf_index"]),
                tree_size=int(d["tree_size"]),
                hashes=tuple(d["hashes"]),
                schema_version=int(d["schema_version"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ProofError(f"malformed inclusion proof: {_why(exc)}") from None

    def verify(self, root: bytes) -> None:
        try:
            leaf = record_leaf_hash(_utf8_id(self.record_id), self.sha256)
        except ValueError:
            raise ProofError(f"proof digest {shown(self.sha256)} is not hex") from None
        verify_inclusion(leaf, self.leaf_index, self.tree_size, _unb64(self.hashes), root)


@dataclass(frozen=True)
class NonInclusionProof:
    """Two adjacent leaves that bracket ``record_id`` (either may be absent at an edge)."""

    record_id: str
    tree_size: int
    left: InclusionProof | None
    right: InclusionProof | None
    schema_version: int = 1

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "record_id": self.record_id,
            "tree_size": self.tree_size,
            "left": self.left.to_dict() if self.left else None,
            "right": self.right.to_dict() if self.right else None,
        }

    @classmethod
    def from_dict(cls, d: dict) -> NonInclusionProof:
        try:
            left, right = d["left"], d["right"]
            return cls(
                record_id=str(d["record_id"]),
                tree_size=int(d["tree_size"]),
                left=InclusionProof.from_dict(left) if left is not None else None,
                right=InclusionProof.from_dict(right) if right is not None else None,
                schema_version=int(d["schema_version"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ProofError(f"malformed non-inclusion proof: {_why(exc)}") from None

    def verify(self, root: bytes) -> None:
        """Raise :class:`ProofError` unless ``record_id`` is provably not a leaf under ``root``."""
        key, n = sort_key(_utf8_id(self.record_id)), self.tree_size
        if n == 0:
            if root != EMPTY_ROOT or self.left or self.right:
                raise ProofError("an empty tree has the empty root and no neighbours")
            return
        for side in (self.left, self.right):
            if side is not None:
                if side.tree_size != n:
                    raise ProofError("neighbour proofs are for a different tree size")
                side.verify(root)
        left, right = self.left, self.right
        if left is None and right is None:
            raise ProofError("a non-empty tree needs at least one neighbour")
        if left is None and (right.leaf_index != 0 or not key < sort_key(right.record_id)):
            raise ProofError("right neighbour is not the first leaf, or not after the id")
        if right is None and (left.leaf_index != n - 1 or not sort_key(left.record_id) < key):
            raise ProofError("left neighbour is not the last leaf, or not before the id")
        if left is not None and right is not None:
            if right.leaf_index != left.leaf_index + 1:
                raise ProofError("neighbours are not adjacent leaves")
            if not sort_key(left.record_id) < key < sort_key(right.record_id):
                raise ProofError(f"{shown(self.record_id)} is not between the two neighbours")


class LeafIndex:
    """A sorted list of ``(record_id, sha256)`` leaves with a tree, to answer proofs."""

    def __init__(self, leaves: Sequence[tuple[str, str]]) -> None:
        self.leaves = sorted(leaves, key=lambda leaf: sort_key(leaf[0]))
        self._keys = [sort_key(rid) for rid, _ in self.leaves]
        for a, b in zip(self._keys, self._keys[1:], strict=False):
            if a == b:
                raise ProofError(f"duplicate leaf id {shown(a.decode('utf-8', 'replace'))}")
        self.tree = MerkleTree([record_leaf_hash(rid, sha) for rid, sha in self.leaves])

    @property
    def root(self) -> bytes:
        return self.tree.root

    def position(self, record_id: str) -> int:
        """Index of the first leaf whose id is not below ``record_id``."""
        from bisect import bisect_left

        return bisect_left(self._keys, sort_key(record_id))

    def inclusion(self, record_id: str) -> InclusionProof:
        i = self.position(record_id)
        if i >= len(self.leaves) or self.leaves[i][0] != record_id:
            raise KeyError(record_id)
        return self._proof(i)

    def non_inclusion(self, record_id: str) -> NonInclusionProof:
        i = self.position(record_id)
        if i < len(self.leaves) and self.leaves[i][0] == record_id:
            raise KeyError(f"{record_id} is in the tree")
        n = len(self.leaves)
        left = self._proof(i - 1) if i > 0 else None
        right = self._proof(i) if i < n else None
        return NonInclusionProof(record_id=record_id, tree_size=n, left=left, right=right)

    def _proof(self, i: int) -> InclusionProof:
        rid, sha = self.leaves[i]
        return InclusionProof(rid, sha, i, len(self.leaves), _b64(self.tree.inclusion_proof(i)))
