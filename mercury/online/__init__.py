"""The online store: its key layout and its backends (Redis; in-memory for unit tests),
picked by ``online_store.type`` (``factory.open_store``). It knows nothing about features:
reading values back is ``mercury.features.reader``."""
