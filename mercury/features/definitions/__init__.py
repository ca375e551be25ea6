"""Every feature set the platform serves. ``ALL`` is what ``mercury features compile`` writes."""

from mercury.features.definitions.assistant import ASSISTANT_SETS

ALL = ASSISTANT_SETS
