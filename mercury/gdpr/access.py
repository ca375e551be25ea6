"""The data-subject access export (GDPR Art. 15): all that is stored about a user, as one
JSON document.

It reads the places the erasure clears (``mercury.gdpr.erasure``), by the same rules: the
profile row, the online store's keys (every set and version), and every lake table's rows
that name the user by id or token or quote them in a kept payload (dead letters, late events).
The warehouse marts and the event log are built from, or archived as, these rows and are
not repeated. Audit questions are decrypted: the subject is entitled to their own words.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from mercury.gdpr.subject import Subject, subject

if TYPE_CHECKING:
    from mercury.config import Settings


def export_subject(settings: Settings, user_id: str,
                   now: datetime | None = None) -> dict[str, Any]:
    from mercury.privacy.keys import load_keys

    keys = load_keys(settings)
    who = subject(keys, "access-export", user_id)
    return {"user_id": user_id, "user_tokens": list(who.tokens),
            "exported_at": (now or datetime.now(UTC)).isoformat(),
            "profile": _profile(settings, user_id),
            "online_store": _online(settings, who),
            "lake": _lake(settings, who, keys)}


def to_json(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
                        default=str)


def _profile(settings: Settings, user_id: str) -> dict[str, Any] | None:
    import psycopg
    from psycopg.rows import dict_row

    from mercury.generator.profiles_pg import TABLE

    with psycopg.connect(settings.postgres.conninfo(), autocommit=True,
                         row_factory=dict_row) as conn:
        exists = conn.execute("select to_regclass(%s) as t", (TABLE,)).fetchone()
        if not exists or exists["t"] is None:
            return None
        return conn.execute(f"select * from {TABLE} where user_id = %s", (user_id,)).fetchone()


def _online(settings: Settings, who: Subject) -> dict[str, dict[str, str]]:
    from mercury.gdpr.online import USER_TAG
    from mercury.online.factory import open_store

    with open_store(settings) as store:
        keys = sorted(set(store.scan(f"*{{{USER_TAG}:{_glob_escape(who.user_id)}}}*")))
        hashes = store.read(keys)
    return {key: {name: value.decode(errors="replace") for name, value in fields.items()}
            for key, fields in zip(keys, hashes, strict=True)}


def _lake(settings: Settings, who: Subject, keys) -> dict[str, list[dict[str, Any]]]:
    from mercury.gdpr.evidence import EVIDENCE_TABLE
    from mercury.gdpr.lake import subject_rows
    from mercury.lake.tables import catalog

    lake = catalog(settings)
    found: dict[str, list[dict[str, Any]]] = {}
    for namespace in lake.list_namespaces():
        for identifier in lake.list_tables(namespace):
            name = ".".join(identifier)
            table = lake.load_table(identifier)
            match = subject_rows(table, [who]) if name != EVIDENCE_TABLE else None
            if match is None or table.current_snapshot() is None:
                continue
            rows = table.scan(row_filter=match).to_arrow().to_pylist()
            if rows:
                found[name] = [_readable(settings, keys, row) for row in rows]
    return found


def _readable(settings: Settings, keys, row: dict[str, Any]) -> dict[str, Any]:
    from mercury.privacy.errors import KeyError_
    from mercury.serving.audit_sealing import open_question

    question = row.get("question")
    if isinstance(question, str) and question.startswith("enc"):
        try:
            row = {**row, "question": open_question(settings, keys, question,
                                                     row.get("request_id"))}
        except (KeyError_, ValueError) as exc:
            row = {**row, "question": f"(cannot be decrypted: {exc})"}
    return row


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
