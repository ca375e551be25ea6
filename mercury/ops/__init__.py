"""Clients for operating the platform's services (Flink REST, ...): no I/O at import time."""
