"""Taking a feature-set version from filled to served: warm start from the lake, online/offline
consistency, shadow compare, promote, roll back and retire (docs/BATCH.md)."""
