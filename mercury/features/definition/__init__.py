"""Feature definitions as data: the DSL, its validation against the contracts, window and
filter semantics, and the compile step that writes the versioned JSON specs engines run."""
