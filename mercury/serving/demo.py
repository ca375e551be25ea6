"""The context API's part of ``make demo``: features into Redis, the real service, a few
questions, a safety outcome, then the audit trail through the lake into the compliance view.

1. Online features: the Flink SQL job, deployed on the local cluster as the
   ``streaming_features`` DAG deploys it, reads the generated event log into Redis; every
   feature set's version 1 is promoted once it has caught up.
2. ``mercury serve`` starts as its own process; the demo waits for ``/readyz`` (model load).
3. Three questions for one user, one per kind of plan, then a safety outcome for the first.
4. Live: a new card purchase of another user is written to the event log and timed until the
   job has it in Redis; the context API's answer for that user then lists it.
5. The service and the job stop (SIGINT: it ships what it spooled; the job: a savepoint),
   the audit streams and the new purchase are loaded into the lake (step 10 recomputes what
   was served from it), dbt builds the compliance models, and the demo reads what the
   assistant saw for the first user, masked, then as the compliance investigator.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, cast

import httpx
import orjson

from mercury.config import FileEventLogConfig, Settings

if TYPE_CHECKING:
    from mercury.features.executors.streaming.executor import DictState
    from mercury.online.redis_store import RedisOnlineStore
    from mercury.online.store import KeyWrite

STREAMS = ("transactions", "user_activity", "risk_signals", "user_profile_cdc")
QUESTIONS = ("Why was my card declined at the till?", "Can I afford a 250 EUR jacket?",
             "Summarize my spending this week")
LIVE_QUESTION = "What did I just buy?"


def load_online_features(settings: Settings) -> tuple[int, str]:
    """Every valid event of the log into the online store with the plain-Python executor (the
    serving tests' world; the demo runs the Flink job instead); (events applied, a busy
    user)."""
    from mercury.eventlog.file_log import FileEventReader
    from mercury.features.definition.compile import load_compiled
    from mercury.features.executors.reference import valid_record
    from mercury.features.executors.streaming.executor import DictState, OnlineExecutor
    from mercury.online.factory import open_store

    sets = load_compiled()
    executor, applied = OnlineExecutor(sets), 0
    states: dict[str, DictState] = {}
    pending: list[KeyWrite] = []
    forget_earlier_world(settings)
    store = open_store(settings)
    reader = FileEventReader(cast(FileEventLogConfig, settings.event_log).root)
    for stream in STREAMS:
        for message in reader.read(stream):
            record = valid_record(stream, message.value)
            if record is None:
                continue
            for key, _ in executor.route(stream, record):
                outcome = executor.process(key, stream, record,
                                           states.setdefault(key, DictState()))
                pending.extend(outcome.writes)
                applied += not outcome.duplicate
            if len(pending) >= 2_000:
                store.write(pending)
                pending = []
    store.write(pending)
    for name in sorted({fs.name for fs in sets}):
        store.set_active(name, 1)
    store.close()
    return applied, busiest_decliners(settings)[0]


def forget_earlier_world(settings: Settings) -> None:
    """The demo's world is new each run: keys of an earlier world would mix into its users."""
    from mercury.online.factory import open_store

    store = open_store(settings)
    client = cast("RedisOnlineStore", store).client  # the demo runs on the local Redis
    stale = list(client.scan_iter(match="fs:{u:*", count=5_000))
    for start in range(0, len(stale), 5_000):
        client.unlink(*stale[start:start + 5_000])
    store.close()


def busiest_decliners(settings: Settings, n: int = 2) -> list[str]:
    """The users with the most declined AUTHs in the log (the decline question has an answer
    for them)."""
    from collections import Counter

    from mercury.eventlog.file_log import FileEventReader
    from mercury.features.executors.reference import valid_record

    declines: Counter[str] = Counter()
    reader = FileEventReader(cast(FileEventLogConfig, settings.event_log).root)
    for message in reader.read("transactions"):
        record = valid_record("transactions", message.value)
        if record is not None and record.get("auth_decision") == "DECLINED":
            declines[record["user_id"]] += 1
    return [user for user, _ in declines.most_common(n)]


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    """Until ``/readyz`` says ready; RuntimeError if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mercury serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"mercury serve was not ready after {timeout_s:.0f} s")


def ask(client: httpx.Client, settings: Settings, user_id: str, caller: str, question: str,
        attempts: int = 5) -> dict[str, Any]:
    """One question, as the LLM gateway asks it: a fresh assertion from the identity provider,
    and another try after ``Retry-After`` when the process sheds the request (503)."""
    from mercury.serving.local_idp import issue_assertion

    for attempt in range(1, attempts + 1):
        reply = client.post("/v1/context", json={
            "user_id": user_id, "question": question,
            "options": {"language": "en", "llm_model_version": "demo-llm-1"}},
            headers={"x-user-assertion": issue_assertion(settings, user_id, caller)})
        if reply.status_code == 503 and attempt < attempts:
            print(f"   (shed: {reply.json().get('error')}; retrying)")
            time.sleep(float(reply.headers.get("retry-after", "1")))
            continue
        reply.raise_for_status()
        answer: dict[str, Any] = reply.json()
        # A store read that missed its deadline is the service working as designed on a
        # machine too busy for its budget (a cold embedder, other jobs): say so, ask again.
        late = [part for part in answer["degraded"] if part.endswith(":deadline")]
        if not late or attempt == attempts:
            return answer
        print(f"   (degraded by a deadline, {', '.join(late)}: the machine is busy; asking again)")
        time.sleep(0.5 * attempt)  # the cold parts (the embedder's first queries) catch up
    reply.raise_for_status()
    return cast("dict[str, Any]", reply.json())


def ask_the_service(settings: Settings, user_id: str, live_user_id: str
                    ) -> tuple[list[dict[str, Any]], float, dict[str, Any]]:
    """``QUESTIONS`` for ``user_id``; then a new purchase of ``live_user_id`` timed through
    the Flink job into the answer (mercury/serving/live.py). Returns (answers, ms from the
    event log to Redis, the live user's answer)."""
    from mercury.privacy.keys import load_keys
    from mercury.serving import live
    from mercury.serving.auth import service_token

    cfg = settings.serving
    url = f"http://{cfg.host}:{cfg.port}"
    keys = load_keys(settings)
    caller = cfg.callers[0].name
    headers = {"authorization": f"Bearer {service_token(keys, caller)}"}
    proc = subprocess.Popen([sys.executable, "-m", "mercury.cli", "serve"], env=os.environ)
    answers: list[dict[str, Any]] = []
    try:
        wait_ready(url, proc)
        with httpx.Client(base_url=url, headers=headers, timeout=5) as client:
            for question in QUESTIONS:
                answers.append(ask(client, settings, user_id, caller, question))
            client.post("/v1/outcomes", json={
                "request_id": answers[0]["request_id"], "outcome": "ALLOWED",
                "categories": [], "llm_model_version": "demo-llm-1"}).raise_for_status()
            visible_ms, live_answer = live.time_a_purchase(
                settings, live_user_id,
                lambda user: ask(client, settings, user, caller, LIVE_QUESTION))
    finally:
        proc.send_signal(signal.SIGINT)  # graceful: the spool is shipped before it exits
        proc.wait(120)  # the shipper's last round may wait up to 60 s for the one in flight
    return answers, visible_ms, live_answer


def describe(answer: dict[str, Any]) -> list[str]:
    docs = answer["documents"]["chunks"] if answer["documents"] else []
    lines = [f"{answer['intent']:<17} fetched {', '.join(answer['fetched'])}; "
             f"{answer['latency_ms']['total']:.1f} ms; degraded {answer['degraded'] or 'none'}"]
    if docs:
        lines.append(f"{'':17} first chunk {docs[0]['doc_id']} > {docs[0]['heading']} "
                     f"({docs[0]['score']:.3f})")
    spending = (answer["features"].get("spending") or {}).get("values") or {}
    if spending:
        settled = orjson.dumps(spending["settled_amount"]["30d"]).decode()
        lines.append(f"{'':17} settled in 30 days {settled}")
    purchases = (answer["features"].get("purchases") or {}).get("values") or {}
    if purchases:
        lines.append(f"{'':17} recent purchases {len(purchases['recent_purchases'])}")
    return lines


def what_the_assistant_saw(settings: Settings, user_token: str
                           ) -> dict[str, list[tuple[Any, ...]]]:
    """The compliance view's rows for the user, as each role sees them (role -> rows, the
    request id first)."""
    import duckdb

    query = ("select request_id, event_ts, intent, question_redacted, retrieved_doc_ids, "
             "feature_versions, safety_outcome "
             "from analytics_compliance.compliance_assistant_context "
             "where user_token = ? order by event_ts")
    seen = {}
    with duckdb.connect(str(settings.warehouse.duckdb_path), read_only=True) as con:
        for role in ("analyst", "compliance_investigator"):
            con.execute(f"set variable mercury_role = '{role}'")
            seen[role] = con.execute(query, [user_token]).fetchall()
    return seen


def compliance_problems(seen: dict[str, list[tuple[Any, ...]]], answers: list[dict[str, Any]]
                        ) -> list[str]:
    """Each answer the demo used is one row of the view for every role. A question asked again
    (a deadline missed on a busy machine) is a request of its own, with its own row."""
    problems = []
    for role, rows in seen.items():
        ids = [row[0] for row in rows]
        missing = [a["request_id"] for a in answers if ids.count(a["request_id"]) != 1]
        if missing:
            problems.append(f"compliance view as {role}: requests {missing} not exactly once "
                            f"among the user's {len(rows)} rows")
    return problems


def run_context_demo(settings: Settings) -> list[str]:
    """The step's failures (empty when it all worked)."""
    from mercury.config import config_path
    from mercury.lake.load import load_stream
    from mercury.ops.deployments import DeploymentError
    from mercury.ops.flink_rest import FlinkRestError
    from mercury.privacy.keys import load_keys
    from mercury.privacy.protect import user_token
    from mercury.serving import live
    from mercury.serving.audit import backlog_bytes
    from mercury.serving.runtime import spool_dir
    from mercury.warehouse.dbt_runner import DbtError, run_dbt

    user, live_user = busiest_decliners(settings)
    forget_earlier_world(settings)
    try:
        live.deploy_and_catch_up(settings, config_path().resolve())
        answers, visible_ms, live_answer = ask_the_service(settings, user, live_user)
    except (RuntimeError, TimeoutError, httpx.HTTPError, FlinkRestError,
            DeploymentError) as exc:
        return [f"online features and the context API: {exc}"]
    finally:
        live.stop(settings)
    print(f"user {user} (token {answers[0]['user_token']}):")
    for answer, question in zip(answers, QUESTIONS, strict=True):
        print(f"Q: {question}")
        for line in describe(answer):
            print(f"   {line}")
    problems = [f"context API: {a['intent']} answer degraded: {a['degraded']}"
                for a in answers if a["degraded"]]
    if answers[0]["intent"] != "why_declined" or not answers[0]["documents"]:
        problems.append("context API: the decline question got no policy documents")
    recent = live_answer["features"]["purchases"]["values"]["recent_purchases"]
    print(f"live: user {live_user} just bought something: {visible_ms:.0f} ms from the event "
          f"log to Redis through the Flink job, and the context API's next answer lists it "
          f"({recent[0]['amount']} {recent[0]['currency']}, newest of {len(recent)} purchases)")
    unshipped = backlog_bytes(spool_dir(settings))
    if unshipped:
        problems.append(f"audit: {unshipped:,} bytes still spooled after the service stopped "
                        f"(its last shipping round failed; see its log)")
    for stream in ("inference_audit", "assistant_safety_outcomes", "transactions"):
        report = load_stream(settings, stream)
        print(report.summary())
        if stream != "transactions" and report.dead_letters:  # the service wrote them
            problems.append(f"audit trail: {report.summary()}")
    try:
        print(run_dbt(["build", "--select", "source:audit+"], settings=settings).summary())
    except DbtError as exc:
        return problems + [f"dbt build of the compliance models: {exc}"]
    token = user_token(load_keys(settings), user)
    seen = what_the_assistant_saw(settings, token)
    for role, rows in seen.items():
        print(f"as {role}:")
        for row in rows:
            print("  " + " | ".join(str(v)[:60] for v in row[1:]))
    return problems + compliance_problems(seen, answers)
