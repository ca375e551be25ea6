"""PyFlink entry points. Each job exposes a pure ``build(...)`` over a source table and a short
``main`` that only declares connectors and parses arguments. Run them with the Flink env."""
