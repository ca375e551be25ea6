"""The Kafka binding against librdkafka's built-in mock cluster (no Kafka broker can run
here; see ARCHITECTURE.md). The mock supports produce, consumer groups, commits and the
idempotent producer; topic admin and transactions are not exercised."""

import orjson
import pytest
from confluent_kafka import Producer

from mercury.contracts import schemas, wire
from mercury.eventlog.kafka_log import KafkaEventConsumer, KafkaEventProducer


@pytest.fixture
def mock_cluster():
    """Three mock brokers owned by a holder client; other clients connect by address."""
    holder = Producer({"test.mock.num.brokers": 3})
    brokers = holder.list_topics(timeout=10).brokers.values()
    yield {"bootstrap.servers": ",".join(f"{b.host}:{b.port}" for b in brokers)}
    holder.flush(5)


def _group(cluster: dict) -> dict:
    # The mock coordinator lets a closed member's partitions go only when its session times
    # out, so a short session keeps the restart tests fast (production keeps the default).
    return {**cluster, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


def _produce(cluster: dict, stream: str, records: list[dict]) -> None:
    producer = KafkaEventProducer(cluster)
    for record in records:
        producer.send(stream, orjson.dumps(record), key=record["user_id"])
    producer.flush()


def _records(n):
    return [{"event_id": f"e{i}", "user_id": f"usr_{i % 4}", "n": i} for i in range(n)]


def _consume_all(consumer, expected, rounds=40):
    got = []
    for _ in range(rounds):
        got += consumer.poll(max_messages=500, timeout_s=0.5)
        if len(got) >= expected:
            break
    return got


def test_produce_group_consume_commit_and_resume(mock_cluster):
    _produce(mock_cluster, "transactions", _records(40))

    first = KafkaEventConsumer(_group(mock_cluster), "features", ["transactions"])
    got = _consume_all(first, 40)
    assert sorted(orjson.loads(m.value)["n"] for m in got) == list(range(40))
    # keyed by user: every message of a user sits in one partition, in send order
    partitions = {}
    for m in got:
        partitions.setdefault(m.key, set()).add(m.position.split("/")[1])
        assert m.stream == "transactions"
    assert all(len(p) == 1 for p in partitions.values())
    first.commit()
    first.close()

    _produce(mock_cluster, "transactions", _records(50)[40:])

    restarted = KafkaEventConsumer(_group(mock_cluster), "features", ["transactions"])
    resumed = _consume_all(restarted, 10)
    assert sorted(orjson.loads(m.value)["n"] for m in resumed) == list(range(40, 50))
    restarted.close()


def test_uncommitted_messages_are_delivered_again(mock_cluster):
    _produce(mock_cluster, "risk_signals", _records(5))
    crashed = KafkaEventConsumer(_group(mock_cluster), "g2", ["risk_signals"])
    assert len(_consume_all(crashed, 5)) == 5
    crashed.close()  # no commit: the group has not finished these
    again = KafkaEventConsumer(_group(mock_cluster), "g2", ["risk_signals"])
    assert len(_consume_all(again, 5)) == 5
    again.close()


def test_avro_payloads_travel_in_the_confluent_wire_format(mock_cluster):
    v1 = schemas.load("transaction", 1)
    record = {"event_id": "1b4e28ba-2fa1-41d2-883f-0016d3cca427", "user_id": "usr_1",
              "account_id": "acc_1", "merchant_id": "mch_1", "amount": 9.5, "currency": "USD",
              "event_type": "AUTH", "event_ts": 1, "ingest_ts": 2, "risk_score": 0.5,
              "mcc_code": "5411", "country": "US", "purchase_id": None,
              "auth_decision": "APPROVED", "decline_reason": None, "reversal_reason": None,
              "card_last4": None}
    producer = KafkaEventProducer(mock_cluster)
    producer.send("transactions", wire.encode(record, v1), key="usr_1")
    producer.flush()
    consumer = KafkaEventConsumer(_group(mock_cluster), "avro", ["transactions"])
    (message,) = _consume_all(consumer, 1)
    decoded, schema_id = wire.decode(message.value, reader=schemas.load("transaction"))
    assert schema_id == v1.schema_id and decoded["amount"] == 9.5
    assert decoded["installment_plan_id"] is None
    consumer.close()


def test_producer_is_idempotent_by_configuration(mock_cluster):
    producer = KafkaEventProducer(mock_cluster)
    # librdkafka refuses idempotence with acks other than all; the binding sets both.
    conf_is_applied = producer._producer.list_topics(timeout=5) is not None
    assert conf_is_applied
    with pytest.raises(Exception, match="acks"):
        KafkaEventProducer({**mock_cluster, "acks": "1"})
