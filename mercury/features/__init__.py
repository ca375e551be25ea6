"""Feature definitions (``dsl``, ``definitions``) and the executors that compute them.

Importing this package is cheap and does no I/O; engines are imported only by the executor
modules that need them.
"""
