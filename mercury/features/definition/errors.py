"""Errors of feature definitions, apart so every definition module can raise them."""

from __future__ import annotations


class DefinitionError(ValueError):
    """A feature definition that cannot mean anything; the message names what is wrong."""
