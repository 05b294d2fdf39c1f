"""Every error lineage raises, under one root.

Two families, because a caller must treat them differently:

* :class:`BadInputError` (exit code 3): the input is malformed or incomplete —
  fix the file named in the message and run again. Nothing was written.
* :class:`VerificationError` (exit code 1): the input is well formed but does
  not match what was signed or allowed — somebody changed data, keys or
  decisions. Do not train; investigate.
"""

from __future__ import annotations

from collections.abc import Iterable


class LineageError(Exception):
    """Root of every error raised by :mod:`lineage`."""

    exit_code = 1

    def __init__(self, message: str, *, problems: Iterable[str] = ()) -> None:
        self.problems = tuple(problems)
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


# -- bad input (exit 3) --------------------------------------------------------


class BadInputError(LineageError):
    """The input is malformed; fix it and run again."""

    exit_code = 3


class SourceRegistryError(BadInputError):
    """``sources.yaml`` is malformed; every problem is listed."""


class UnknownLicenseError(BadInputError):
    """A source names a license that is neither a known SPDX id nor ``LicenseRef-*``."""


class MissingSourceFileError(BadInputError):
    """A source's location points at a file that does not exist."""


class MalformedRecordError(BadInputError):
    """A raw or ingested record cannot be parsed."""


class MissingColumnError(MalformedRecordError):
    """A source's field mapping names a column its raw data does not have."""


class DuplicateRecordError(BadInputError):
    """Two records share one record id."""


class PolicyFileError(BadInputError):
    """A policy file is malformed; every problem is listed."""


class DataValidationError(BadInputError):
    """The records failed the data-quality suite; the report names the records."""


class KeyFileError(BadInputError):
    """A signing or trusted key is missing or unreadable."""


class ParamsError(BadInputError):
    """``params.yaml`` is malformed; every problem is listed."""


class MalformedLedgerError(BadInputError):
    """A deletion-ledger line is not a well-formed entry; the message names file:line."""


class LedgerEntryError(BadInputError):
    """A ledger change was refused (unknown or duplicate request, a forbidden status change)."""


class LedgerBusyError(BadInputError):
    """Another deletion holds the ledger lock; nothing was written. Run again when it is done."""


# -- verification failures (exit 1) -------------------------------------------


class VerificationError(LineageError):
    """Data, keys or decisions do not match what was signed: do not train."""


class EnvelopeFormatError(VerificationError):
    """A signed file is not a well-formed DSSE envelope or in-toto Statement."""


class UntrustedKeyError(VerificationError):
    """A signature was made by a key that is not under ``policies/trusted_keys``."""


class KeyValidityError(VerificationError):
    """A trusted key signed outside its validity or after revocation, or is compromised."""


class SignatureMismatchError(VerificationError):
    """The payload was modified after it was signed."""


class ForeignSignatureError(VerificationError):
    """The signature is valid, but for a different payload (it was swapped in)."""


class RecordHashMismatchError(VerificationError):
    """A record's text no longer hashes to the digest stored beside it."""


class RecordTamperedError(VerificationError):
    """A record's digest differs from the one in the signed manifest."""


class UnsignedRecordError(VerificationError):
    """A record is not in the signed manifest (it was added after signing)."""


class MissingRecordError(VerificationError):
    """A record in the signed manifest is gone (it was removed after signing)."""


class ManifestRollbackError(VerificationError):
    """The manifest is older than the newest one already seen (a replay)."""


class ForgedDecisionError(VerificationError):
    """The gate decision does not match its signed content or its manifest."""


class RefusedRecordError(VerificationError):
    """A record the gate refused was about to be used for training."""


class ProofError(VerificationError):
    """A Merkle inclusion or non-inclusion proof does not verify."""


class ArtifactDigestError(VerificationError):
    """A file named as a subject of a signed statement differs from its signed digest."""


class UnsignedLedgerEntryError(VerificationError):
    """Ledger entries were appended after its head was signed (or it has no signed head)."""


class TruncatedLedgerError(VerificationError):
    """The ledger has fewer entries than its signed head counts: its end was cut off."""


class MissingLedgerEntryError(VerificationError):
    """A ledger entry was removed: the sequence numbers have a gap."""


class ReorderedLedgerError(VerificationError):
    """Ledger entries are out of sequence: moved, or replayed."""


class TamperedLedgerEntryError(VerificationError):
    """A ledger entry was edited after the next one chained to it (or after the head signed it)."""


class ReceiptFormatError(VerificationError):
    """A signed deletion receipt lacks a field, or a field has the wrong shape."""


class ReceiptProofError(ProofError):
    """A receipt's non-inclusion proof does not show its record absent from the stated root."""
