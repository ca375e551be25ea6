"""Operators: one task each, built on the hooks."""
