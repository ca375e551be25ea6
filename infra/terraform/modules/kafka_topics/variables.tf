# No inputs: the topic list is the registry (topics.json); the provider is configured by the caller.
