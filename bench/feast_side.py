"""The Feast half of ``bench/online_vs_feast.py``; runs in the Feast env (bench/envs/feast).

It never imports ``mercury`` (Feast's pins cannot share the main env); everything it needs
comes in a JSON spec written by the orchestrator, and everything it measures goes out as JSON.

    load     apply the feature views to a file registry in the work dir, then write every
             user's values into Feast's Redis online store with ``write_to_online_store``,
             one chunk of users and one feature view at a time
    serve    read user ids on stdin, one per line; for each, time a single-user
             ``get_online_features(...).to_dict()``, a PING, and the same HMGET pipeline sent
             directly (Feast's Redis commands without Feast) with the hiredis parser Feast's
             client uses and with redis-py's pure-Python parser; answer one JSON line each

Spec (JSON): project, connection_string, key_ttl_seconds, event_ts_ms, user_format
(str.format pattern with {i}), users, views ({view: [[feature, dtype], ...]}), and
templates (a list of {feature: value}); user i gets templates[i % len(templates)].
Usage: python bench/feast_side.py load --spec SPEC --workdir DIR --out OUT [--chunk N]
       python bench/feast_side.py serve --spec SPEC --workdir DIR --warmup USERS.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path


def build_store(spec: dict, workdir: Path):
    from feast import FeatureStore, RepoConfig
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig

    config = RepoConfig(
        project=spec["project"], provider="local", repo_path=workdir,
        registry=str(workdir / "registry.db"),
        online_store=RedisOnlineStoreConfig(connection_string=spec["connection_string"],
                                            key_ttl_seconds=spec["key_ttl_seconds"]),
        entity_key_serialization_version=3)
    return FeatureStore(config=config)


def definitions(spec: dict, workdir: Path) -> list:
    """An entity and one feature view per feature set; the batch source is never read."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Bool, Float64, Int64, String

    dtypes = {"float": Float64, "int": Int64, "str": String, "bool": Bool}
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    source = FileSource(path=str(workdir / "unused.parquet"), timestamp_field="event_timestamp")
    views = [FeatureView(name=view, entities=[user], ttl=timedelta(days=35), online=True,
                         source=source,
                         schema=[Field(name="user_id", dtype=String),
                                 *(Field(name=f, dtype=dtypes[t]) for f, t in features)])
             for view, features in spec["views"].items()]
    return [user, *views]


def used_memory(client) -> int:
    return client.info("memory")["used_memory"]


def load(spec: dict, workdir: Path, chunk: int) -> dict:
    import pandas as pd

    store = build_store(spec, workdir)
    store.apply(definitions(spec, workdir))
    client = store._get_provider().online_store._get_client(store.config.online_store)
    templates, users = spec["templates"], spec["users"]
    event_ts = datetime.fromtimestamp(spec["event_ts_ms"] / 1000, tz=UTC)
    before = used_memory(client)
    started = time.perf_counter()
    for first in range(0, users, chunk):
        ids = range(first, min(users, first + chunk))
        rows = [templates[i % len(templates)] for i in ids]
        user_ids = [spec["user_format"].format(i=i) for i in ids]
        for view, features in spec["views"].items():
            frame = pd.DataFrame({"user_id": user_ids, "event_timestamp": event_ts,
                                  **{f: [row[f] for row in rows] for f, _ in features}})
            store.write_to_online_store(view, frame)
        done = ids.stop
        if done % max(chunk, 50_000) == 0 or done == users:
            seconds = time.perf_counter() - started
            print(f"  feast: wrote {done:>9,} users  {done / seconds:>7,.0f} users/s "
                  f"({len(spec['views'])} feature views each)", flush=True)
    seconds = time.perf_counter() - started
    after = used_memory(client)
    return {"load_seconds": round(seconds, 1), "used_memory_before": before,
            "used_memory_after": after, "keys": client.dbsize(), **versions()}


def versions() -> dict:
    import feast
    import redis

    try:
        import hiredis
        parser = f"hiredis {hiredis.__version__}"
    except ImportError:
        parser = "pure-Python"
    return {"feast_version": feast.__version__, "redis_py_version": redis.__version__,
            "redis_parser": parser}


def serve(spec: dict, workdir: Path, warmup: list[str], out) -> None:
    """Answer one user id per stdin line with one JSON line of timings and values on ``out``.

    Per user: ``get_online_features(...).to_dict()``, a PING, and the same HMGET pipeline
    sent directly with Feast's client (hiredis) and with a pure-Python-parser client. The
    orchestrator interleaves these lines with its own calls, so both sides share the load.
    """
    import redis
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.helpers import _mmh3
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from redis._parsers import _RESP2Parser  # what redis-py uses when hiredis is absent

    store = build_store(spec, workdir)
    refs = [f"{view}:{f}" for view, features in spec["views"].items() for f, _ in features]
    client = store._get_provider().online_store._get_client(store.config.online_store)
    host, port, options = parse_connection(spec["connection_string"])
    python_parser = redis.Redis(connection_pool=redis.ConnectionPool(
        host=host, port=port, parser_class=_RESP2Parser, **options))
    # The HMGETs get_online_features sends: one per feature view, on the user's one hash.
    fields = [[_mmh3(f"{view}:{f}") for f, _ in features] + [f"_ts:{view}"]
              for view, features in spec["views"].items()]
    project = spec["project"].encode()

    def raw(conn, key: bytes):
        pipe = conn.pipeline(transaction=False)
        for names in fields:
            pipe.hmget(key, names)
        return pipe.execute()

    def one(user: str) -> dict:
        key = serialize_entity_key(EntityKey(join_keys=["user_id"],
                                             entity_values=[Value(string_val=user)]),
                                   entity_key_serialization_version=3) + project
        clock = time.perf_counter_ns
        started = clock()
        got = store.get_online_features(features=refs, entity_rows=[{"user_id": user}]).to_dict()
        feast_ns = clock() - started
        started = clock()
        client.ping()
        ping_ns = clock() - started
        started = clock()
        raw(client, key)
        hiredis_ns = clock() - started
        started = clock()
        raw(python_parser, key)
        python_ns = clock() - started
        return {"ns": [feast_ns, ping_ns, hiredis_ns, python_ns],
                "values": {name: column[0] for name, column in got.items() if name != "user_id"}}

    for user in warmup:  # registry load, connections, code paths
        one(user)
    out.write(json.dumps({"ready": True, **versions()}) + "\n")
    out.flush()
    for line in sys.stdin:
        user = line.strip()
        if not user:
            break
        out.write(json.dumps(one(user)) + "\n")
        out.flush()
    python_parser.close()


def parse_connection(text: str) -> tuple[str, int, dict]:
    parts = text.split(",")
    host, port = parts[0].split(":")
    options = dict(p.split("=", 1) for p in parts[1:])
    return host, int(port), {k: int(v) if v.isdigit() else v for k, v in options.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("load", "serve"))
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", type=Path, help="load: where the result JSON goes")
    parser.add_argument("--warmup", type=Path, help="serve: JSON list of user ids to warm up on")
    parser.add_argument("--chunk", type=int, default=10_000, help="load: users per write")
    args = parser.parse_args()
    spec = json.loads(args.spec.read_text())
    if args.command == "load":
        args.out.write_text(json.dumps(load(spec, args.workdir, args.chunk)))
    else:
        # Replies own stdout; anything Feast prints goes to stderr so it cannot break a line.
        replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        serve(spec, args.workdir, json.loads(args.warmup.read_text()), replies)


if __name__ == "__main__":
    sys.exit(main())
