"""The Postgres profile table that CDC reads (logical replication, see the streaming issue).

Writes are upserts that never let an older row overwrite a newer one and skip rows that did
not change, so running the generator twice with the same seed leaves the table as it was.
``REPLICA IDENTITY FULL`` makes deletes and updates carry the whole old row to CDC.
"""

from __future__ import annotations

import psycopg
from psycopg.types.json import Jsonb

TABLE = "mercury.user_profiles"
COLUMNS = ("user_id", "full_name", "email", "locale", "home_country", "risk_tier",
           "kyc_status", "notification_prefs", "updated_at")

DDL = f"""
CREATE SCHEMA IF NOT EXISTS mercury;
CREATE TABLE IF NOT EXISTS {TABLE} (
    user_id            text PRIMARY KEY,
    full_name          text NOT NULL,
    email              text NOT NULL,
    locale             text NOT NULL,
    home_country       char(2) NOT NULL,
    risk_tier          text NOT NULL CHECK (risk_tier IN ('LOW', 'MEDIUM', 'HIGH')),
    kyc_status         text NOT NULL
                       CHECK (kyc_status IN ('PENDING', 'VERIFIED', 'REJECTED', 'EXPIRED')),
    notification_prefs jsonb NOT NULL,
    updated_at         timestamptz NOT NULL
);
ALTER TABLE {TABLE} REPLICA IDENTITY FULL;
"""

_UPSERT = f"""
INSERT INTO {TABLE} AS p ({", ".join(COLUMNS)})
SELECT {", ".join(COLUMNS)} FROM profile_batch
ON CONFLICT (user_id) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])}
WHERE p.updated_at <= EXCLUDED.updated_at
  AND ({", ".join(f"p.{c}" for c in COLUMNS[1:])})
      IS DISTINCT FROM ({", ".join(f"EXCLUDED.{c}" for c in COLUMNS[1:])})
"""


class ProfileTableWriter:
    """Receives batches of full profile rows (dicts with ``updated_at`` in epoch ms)."""

    def __init__(self, conninfo: str):
        self.conn = psycopg.connect(conninfo, autocommit=False)
        with self.conn.transaction():
            self.conn.execute(DDL)
        self.rows_written = 0

    def __call__(self, rows: list[dict]) -> None:
        with self.conn.transaction():
            self.conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS profile_batch (LIKE {TABLE}) "
                              "ON COMMIT DELETE ROWS")
            with self.conn.cursor().copy(
                    f"COPY profile_batch ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row((*(row[c] for c in COLUMNS[:-2]),
                                    Jsonb(row["notification_prefs"]),
                                    _timestamp(row["updated_at"])))
            # The generator never puts two versions of a user in one batch; if a caller does,
            # the newest wins rather than the upsert failing on a repeated key.
            self.conn.execute(_UPSERT.replace("FROM profile_batch", "FROM (SELECT DISTINCT ON "
                                              "(user_id) * FROM profile_batch ORDER BY user_id, "
                                              "updated_at DESC) AS profile_batch"))
        self.rows_written += len(rows)

    def close(self) -> None:
        self.conn.close()


def _timestamp(ms: int):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC)
