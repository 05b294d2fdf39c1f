"""Tokenizers: bytes, fitted on nothing (the default), or a pretrained model's own.

A tokenizer trained on the corpus keeps pieces of deleted records in its
vocabulary (merges of a deleted name, a deleted secret) long after the records
are gone. Bytes need no fitting, so deleting a record never requires a new
tokenizer and nothing of it survives there. A pretrained model brings its own
tokenizer, fitted on its own (pre-training) data, which exante never saw; it is
used as is, since the model's embeddings are indexed by it.

:func:`tokenizer_for` is the one place that picks between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from training.config import ModelConfig


class Tokenizer(Protocol):
    bos_id: int
    eos_id: int
    pad_id: int

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str, *, bos: bool = True, eos: bool = True) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


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


@dataclass(frozen=True)
class PretrainedTokenizer:
    """A Hugging Face tokenizer behind :class:`ByteTokenizer`'s interface.

    BOS and EOS are added here, not by the tokenizer's template, so a record is
    framed the same way whatever the model's own conventions. A tokenizer with no
    BOS starts sequences with its EOS (as GPT-2 does); one with no pad pads with
    EOS (padding is masked, so its id only has to exist).
    """

    hf: Any
    bos_id: int
    eos_id: int
    pad_id: int

    @classmethod
    def wrap(cls, hf: Any) -> PretrainedTokenizer:
        eos = hf.eos_token_id
        bos = hf.bos_token_id if hf.bos_token_id is not None else eos
        pad = hf.pad_token_id if hf.pad_token_id is not None else eos
        return cls(hf, bos, eos, pad)

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode(self, text: str, *, bos: bool = True, eos: bool = True) -> list[int]:
        ids = list(self.hf(text, add_special_tokens=False)["input_ids"])
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the ids, stopping at the first EOS; special tokens are dropped."""
        ids = list(ids)
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.hf.decode(ids, skip_special_tokens=True)


def tokenizer_for(cfg: ModelConfig) -> Tokenizer:
    """The model's tokenizer: bytes for a model built from config, else the checkpoint's own."""
    if cfg.local_path is None:
        return ByteTokenizer()
    return _pretrained_tokenizer(cfg.local_path)


@lru_cache(maxsize=4)
def _pretrained_tokenizer(local_path: str) -> PretrainedTokenizer:
    """Loaded once per process: a GGUF tokenizer takes seconds to rebuild."""
    from training._hf import transformers
    from training._pretrained import locate

    where = locate(local_path)
    return PretrainedTokenizer.wrap(
        transformers().AutoTokenizer.from_pretrained(where.directory, **where.kwargs())
    )
