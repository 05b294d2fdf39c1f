"""A byte-level tokenizer that was fitted on nothing.

A tokenizer trained on the corpus keeps pieces of deleted records in its
vocabulary (merges of a deleted name, a deleted secret) long after the records
are gone. Bytes need no fitting, so deleting a record never requires a new
tokenizer and nothing of it survives there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ByteTokenizer:
    """UTF-8 bytes 0-255, plus beginning, end and padding ids."""

    bos_id: int = 256
    eos_id: int = 257
    pad_id: int = 258

    @property
    def vocab_size(self) -> int:
        return 259

    def encode(self, text: str, *, bos: bool = True, eos: bool = True) -> list[int]:
        ids = list(text.encode("utf-8"))
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the byte ids, stopping at the first end id; specials are dropped."""
        out = bytearray()
        for i in ids:
            if i == self.eos_id:
                break
            if i < 256:
                out.append(i)
        return out.decode("utf-8", errors="replace")
