"""The Kafka topics of production, rendered from the stream registry for Terraform.

`infra/terraform/modules/kafka_topics/topics.json` is this module's output, checked in so a
Terraform run needs no Python; `mercury contracts check` fails when it differs from the
registry, so partitions and retention are typed once (in ``registry.STREAMS``).

    python -m mercury.contracts.kafka_topics --write    # after changing the registry

Why each setting:
- replication factor 3, min in-sync 2: one replica per AZ; a lost AZ keeps topics writable;
- ``compact,delete`` for compacted streams: the latest record per key is kept, but never past
  the stream's retention (docs/COMPLIANCE.md counts on Kafka keeping data 3 to 30 days);
- tiered storage for the others, with only ``LOCAL_RETENTION_HOURS`` on the brokers' disks
  (docs/CAPACITY.md: a week of the audit stream does not fit three brokers); Kafka cannot tier
  compacted topics, so those stay local (they are small).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mercury.contracts.registry import STREAMS, Stream

TOPICS_FILE = (Path(__file__).resolve().parents[2]
               / "infra" / "terraform" / "modules" / "kafka_topics" / "topics.json")
REPLICATION_FACTOR = 3
MIN_IN_SYNC_REPLICAS = 2
# The streaming job and the loaders read near the head; a replay after an outage shorter than
# a day reads from local disk, anything older from the tier.
LOCAL_RETENTION_HOURS = 24
_HOUR_MS = 3_600_000


def topic_config(stream: Stream) -> dict[str, str]:
    """Kafka topic-level settings for one stream (all values strings, as Kafka takes them)."""
    config = {
        "retention.ms": str(stream.retention_hours * _HOUR_MS),
        "min.insync.replicas": str(MIN_IN_SYNC_REPLICAS),
        "cleanup.policy": "compact,delete" if stream.compacted else "delete",
    }
    if not stream.compacted:
        config["remote.storage.enable"] = "true"
        config["local.retention.ms"] = str(
            min(stream.retention_hours, LOCAL_RETENTION_HOURS) * _HOUR_MS)
    return config


def render() -> dict[str, object]:
    """The whole file: every registry stream as a topic, sorted by name."""
    return {
        "generated_by": "python -m mercury.contracts.kafka_topics --write (do not edit)",
        "topics": {
            s.name: {
                "partitions": s.partitions,
                "replication_factor": REPLICATION_FACTOR,
                "config": topic_config(s),
            }
            for s in sorted(STREAMS, key=lambda s: s.name)
        },
    }


def rendered_text() -> str:
    return json.dumps(render(), indent=2, sort_keys=True) + "\n"


def check() -> list[str]:
    """Problems with the checked-in file: missing, or not what the registry renders."""
    if not TOPICS_FILE.exists():
        return [f"{TOPICS_FILE} is missing: run python -m mercury.contracts.kafka_topics --write"]
    if TOPICS_FILE.read_text() != rendered_text():
        return [f"{TOPICS_FILE} differs from the stream registry: run "
                "python -m mercury.contracts.kafka_topics --write"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--write", action="store_true", help="rewrite the file from the registry")
    args = parser.parse_args(argv)
    if args.write:
        TOPICS_FILE.write_text(rendered_text())
        print(f"wrote {TOPICS_FILE} ({len(STREAMS)} topics)")
        return 0
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
