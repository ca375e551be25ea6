"""The knowledge index behind the assistant's answers about policies and merchants.

documents   change events -> validated documents (bad ones dead-lettered, by named rules)
chunking    documents -> chunks that follow headings and paragraphs, with stable ids
embedding   chunks -> vectors; the model name and version travel with every vector
index       the vector-index interface: versions, aliases, ledger, filtered kNN
hybrid      kNN + per-language full text fused by reciprocal rank (both engines)
local_index LanceDB on a local folder (the local default)
opensearch  the OpenSearch kNN adapter (production)
indexer     the incremental indexer: change events -> every maintained index version
rebuild     a full rebuild of a new version, its evaluation and the alias swap
retriever   question -> embedding + words -> filtered hybrid search -> top-k chunks, cached

Importing this package does no I/O and loads neither torch nor lancedb.
"""
