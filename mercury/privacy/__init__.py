"""Protecting personal data: keys, user tokens, encryption and redaction of free text."""
