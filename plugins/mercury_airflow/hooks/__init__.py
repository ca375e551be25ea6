"""Hooks: connections to the platform's services."""
