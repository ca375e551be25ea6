"""The executors of a compiled feature set: ``reference`` (the plain-Python oracle),
``streaming`` (online values: the engine-independent state and its PyFlink job) and ``spark``
(history and training sets). ``events`` is their shared input, ``tiles`` the partial
aggregates, ``agreement`` how they are held to the oracle."""
