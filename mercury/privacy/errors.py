"""Errors of the key hierarchy (kept apart so every privacy module can raise them without
importing another)."""

from __future__ import annotations


class KeyError_(RuntimeError):
    """The keys cannot be loaded or used; the message says what to fix."""


class KeyErased(KeyError_):
    """The data key a value was sealed under was shredded (the user was erased): the value can
    never be decrypted again, by design."""


class RingConflict(KeyError_):
    """Another process changed the key ring between our read and our write: read it again."""
