"""The Feast half of ``bench/training_set_vs_feast.py``; runs in the Feast env (bench/envs/feast).

It never imports ``mercury`` (Feast's pins cannot share the main env). The orchestrator
writes the inputs as Parquet and a JSON spec; this side registers one feature view over the
source Parquet with Feast's local provider (file registry, the default file offline store:
dask), reads the entity rows, and times only ``get_historical_features(...).to_df()``, the
retrieval call and the materialisation of its result. The values go out as Parquet, the
timings and versions as JSON. Two calls, one after the other: the default join (event time
only) and ``filter_by_created_timestamp=True`` with the arrival time as the created timestamp.

Spec (JSON): project, source (Parquet: user_id, event_timestamp, created_timestamp,
<features>), features ([[name, dtype], ...]), view, ttl_days, entities (Parquet: row,
user_id, event_timestamp).
Usage: python bench/feast_historical_side.py --spec SPEC --workdir DIR --out OUT.json \\
           --values VALUES.parquet  (written as VALUES.<mode>.parquet)
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta
from pathlib import Path


def build_store(spec: dict, workdir: Path):
    from feast import (
        Entity,
        FeatureStore,
        FeatureView,
        Field,
        FileSource,
        RepoConfig,
        ValueType,
    )
    from feast.types import Float64, Int64, String

    config = RepoConfig(project=spec["project"], provider="local", repo_path=workdir,
                        registry=str(workdir / "registry.db"), online_store={"type": "sqlite",
                        "path": str(workdir / "online.db")},
                        entity_key_serialization_version=3)
    store = FeatureStore(config=config)
    dtypes = {"float": Float64, "int": Int64, "str": String}
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    # The arrival time as Feast's "created" timestamp: a tie-breaker by default, and a cut-off
    # (created <= entity time) with filter_by_created_timestamp, which makes the join bitemporal.
    source = FileSource(path=spec["source"], timestamp_field="event_timestamp",
                        created_timestamp_column="created_timestamp")
    view = FeatureView(name=spec["view"], entities=[user], ttl=timedelta(days=spec["ttl_days"]),
                       online=False, source=source,
                       schema=[Field(name="user_id", dtype=String),
                               *(Field(name=f, dtype=dtypes[t]) for f, t in spec["features"])])
    store.apply([user, view])
    return store


def versions() -> dict:
    import dask
    import feast
    import pandas
    import pyarrow

    return {"feast": feast.__version__, "dask": dask.__version__, "pandas": pandas.__version__,
            "pyarrow": pyarrow.__version__, "offline_store": "file (dask)"}


def main() -> int:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--values", required=True)
    args = parser.parse_args()
    spec = json.loads(Path(args.spec).read_text())
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    store = build_store(spec, workdir)
    entities = pd.read_parquet(spec["entities"])
    features = [f"{spec['view']}:{name}" for name, _ in spec["features"]]
    runs = {}
    for mode, by_created in (("default", False), ("filter_by_created_timestamp", True)):
        print(f"  feast: get_historical_features ({mode}) for {len(entities):,} entity rows",
              flush=True)
        started = time.perf_counter()
        frame = store.get_historical_features(
            entity_df=entities, features=features,
            filter_by_created_timestamp=by_created).to_df()
        seconds = time.perf_counter() - started
        print(f"  feast: {len(frame):,} rows in {seconds:.1f} s", flush=True)
        frame[["row", *(name for name, _ in spec["features"])]].to_parquet(
            args.values.replace(".parquet", f".{mode}.parquet"))
        runs[mode] = {"seconds": round(seconds, 2), "rows": len(frame)}
    Path(args.out).write_text(json.dumps({"runs": runs, **versions()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
