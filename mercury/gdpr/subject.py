"""Who is being erased, as every store spells them.

Stores hold a user under different names: the raw ``user_id`` (event log, raw lake tables,
feature history as ``entity_id``, Redis keys, the profile table), the ``user_token`` (audit
tables and marts; one per retained tokenization key version) and, inside payloads kept whole
(dead letters, late events), the id as JSON text or as Avro bytes. A ``Subject`` carries all of
them, so each store's step only asks "which of these do you hold".
"""

from __future__ import annotations

from dataclasses import dataclass

from mercury.privacy.keys import Keys
from mercury.privacy.protect import user_tokens
from mercury.privacy.tombstones import erasure_hash


@dataclass(frozen=True)
class Subject:
    ticket: str  # the erasure request's id in the ticketing system: the evidence's only name
    user_id: str
    tokens: tuple[str, ...]  # under every retained tokenization key version
    erasure_hash: str  # what stays in the tombstone list (``erasure_hash``)
    token_hashes: tuple[str, ...] = ()  # the same of each token (audit records carry tokens)

    @property
    def ids(self) -> tuple[str, ...]:
        """Every value a column may hold for this user."""
        return (self.user_id, *self.tokens)

    def json_needles(self) -> tuple[bytes, ...]:
        """The user as a JSON string value: ``"u_1"`` never matches inside ``"u_10"``."""
        return tuple(b'"' + value.encode() + b'"' for value in self.ids)

    def avro_needles(self) -> tuple[bytes, ...]:
        """The user as an Avro string: zig-zag varint length, then the UTF-8 bytes."""
        return tuple(_avro_length(len(v.encode())) + v.encode() for v in self.ids)


def subject(keys: Keys, ticket: str, user_id: str) -> Subject:
    tokens = tuple(user_tokens(keys, user_id).values())
    return Subject(ticket=ticket, user_id=user_id, tokens=tokens,
                   erasure_hash=erasure_hash(keys, user_id),
                   token_hashes=tuple(erasure_hash(keys, token) for token in tokens))


def _avro_length(n: int) -> bytes:
    zigzag = n << 1
    out = bytearray()
    while True:
        byte = zigzag & 0x7F
        zigzag >>= 7
        if zigzag:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
