"""Everything CI checks about the contracts, in one call."""

from __future__ import annotations

from mercury.contracts import compatibility, kafka_topics, registry, schemas
from mercury.contracts.data_classes import missing_data_classes


def check_everything() -> list[str]:
    problems: list[str] = []
    for subject in schemas.subjects():
        for version in schemas.versions(subject):
            schema = schemas.load(subject, version).schema
            problems += [f"{subject} v{version}: field {path} has no valid data class"
                         for path in missing_data_classes(schema)]
    problems += compatibility.check_all()
    problems += registry.check()
    problems += kafka_topics.check()  # Terraform's topic list follows the registry
    return problems
