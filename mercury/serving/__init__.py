"""The context API: the one call the LLM serving tier makes before the model (docs/SERVING.md)."""
