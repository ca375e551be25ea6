"""Errors that carry a message telling the user what to fix: the ``mercury`` command prints
them and exits non-zero (anything else is a bug and shows its traceback)."""

from __future__ import annotations


class CommandError(Exception):
    """A command cannot do its job; the message tells the user what to fix."""


class StackError(Exception):
    """A component could not be started or checked; the message says what to do."""
