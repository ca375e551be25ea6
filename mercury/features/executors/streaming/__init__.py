"""The streaming executor: one executor in four files. ``executor`` routes a record to its
entities and applies it (dedup, then ``incremental``: the per-entity state and the whole-field
writes it renders); ``dedup`` holds the event-id rule; ``flink`` runs it all in PyFlink."""
