"""The online store: key layout, the store backends (Redis; in-memory for unit tests) and the
reader that returns an entity's whole context as of a request time."""
