"""The feature DSL: definitions fail when built with a message naming the problem; compiled
JSON round-trips and is checked against the definitions; windows cut tiles at exact edges."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys

import pytest

from mercury.durations import DAY_MS, HOUR_MS, MINUTE_MS
from mercury.features.definition import compile as compiler
from mercury.features.definition import dsl
from mercury.features.definition.dsl import (
    Aggregate,
    DefinitionError,
    Derived,
    FeatureSet,
    Source,
    eq,
)
from mercury.features.definition.windows import window
from mercury.features.definitions import ALL
from mercury.features.definitions.assistant import spending, transactions
from mercury.features.definitions.entities import user


def _set(*features, **overrides) -> FeatureSet:
    spec = dict(name="t", version=1, entity=user, source=transactions, features=features,
                ttl="35d", owner="tests")
    spec.update(overrides)
    return FeatureSet(**spec)


# ---- validation when built --------------------------------------------------------------

def test_unknown_column_is_named_with_its_feature_and_stream():
    with pytest.raises(DefinitionError, match=r"spend column 'amnt' is not a column of "
                                              r"transactions; known: .*amount"):
        _set(Aggregate("spend", "sum", "amnt", ("1h",)))


def test_unknown_filter_and_group_columns_are_named():
    with pytest.raises(DefinitionError, match=r"spend filter 'kind' is not a column"):
        _set(Aggregate("spend", "sum", "amount", ("1h",), (eq("kind", "AUTH"),)))
    with pytest.raises(DefinitionError, match=r"spend group_by 'shop' is not a column"):
        _set(Aggregate("spend", "sum", "amount", ("1h",), group_by="shop"))


def test_distinct_count_of_money_is_refused():
    with pytest.raises(DefinitionError, match=r"amounts: a distinct count of money means nothing"):
        _set(Aggregate("amounts", "distinct_count", "amount", ("7d",)))


@pytest.mark.parametrize("text, hop", [("90m", "1h"), ("100m", "1h"), ("7d30m", None),
                                       ("180h", "1d"), ("1ms", "5m")])
def test_window_not_a_multiple_of_its_hop_is_refused(text, hop):
    if hop is None:  # not even a duration: the parser's message, naming the window
        with pytest.raises(DefinitionError, match=rf"window '{text}': .* is not a duration"):
            Aggregate("n", "count", None, (text,))
        return
    with pytest.raises(DefinitionError,
                       match=rf"window '{text}' is not a whole number of its {hop} hops"):
        Aggregate("n", "count", None, (text,))


def test_unknown_derived_function_is_named_with_the_known_ones():
    with pytest.raises(DefinitionError, match=r"source transactions: derived column kind uses "
                                              r"unknown function 'mcc_kind'; known: mcc_category"):
        Source("transactions", derived=(Derived("kind", "mcc_kind", ("mcc_code",)),))


def test_derived_column_inputs_must_exist():
    source = Source("transactions", derived=(Derived("kind", "mcc_category", ("mcc",)),))
    with pytest.raises(DefinitionError, match=r"input of kind 'mcc' is not a column"):
        _set(Aggregate("n", "count", None, ("1h",)), source=source)


def test_dead_letter_stream_is_not_a_source():
    with pytest.raises(DefinitionError,
                       match=r"source transactions.dlq: features never read a dead-letter"):
        Source("transactions.dlq")


def test_duplicate_feature_names_are_refused():
    with pytest.raises(DefinitionError, match=r"t: feature names repeat: \['n', 'n'\]"):
        _set(Aggregate("n", "count", None, ("1h",)), Aggregate("n", "count", None, ("24h",)))


@pytest.mark.parametrize("version", [0, -1])
def test_version_starts_at_one(version):
    with pytest.raises(DefinitionError, match=r"t: version starts at 1"):
        _set(Aggregate("n", "count", None, ("1h",)), version=version)


def test_other_construction_errors_name_the_problem():
    with pytest.raises(DefinitionError, match=r"n: op 'median' not in"):
        Aggregate("n", "median", "amount", ("1h",))
    with pytest.raises(DefinitionError, match=r"n: sum needs a column"):
        Aggregate("n", "sum", None, ("1h",))
    with pytest.raises(DefinitionError, match=r"n: give at least one window"):
        Aggregate("n", "count", None, ())
    with pytest.raises(DefinitionError, match=r"feature name 'Spend'"):
        Aggregate("Spend", "count", None, ("1h",))
    with pytest.raises(DefinitionError, match=r"t: name an owner"):
        _set(Aggregate("n", "count", None, ("1h",)), owner="")
    with pytest.raises(DefinitionError, match=r"unknown envelope 'maxwell'"):
        Source("transactions", envelope="maxwell")


def test_specs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        spending.version = 2  # type: ignore[misc]


# ---- serialisation and the compile step --------------------------------------------------

@pytest.mark.parametrize("feature_set", ALL, ids=lambda fs: fs.ref)
def test_every_set_round_trips_through_json(feature_set):
    text = compiler.render(feature_set)
    back = dsl.feature_set_from_dict(json.loads(text))
    assert back == feature_set
    assert compiler.render(back) == text
    assert text.endswith("}\n") and text.startswith("{\n  \"description\"")  # sorted, 2-space


def test_committed_compiled_files_match_the_definitions():
    compiler.check()  # CI: fails naming each stale, missing, extra or invalid file
    assert sorted(p.name for p in compiler.COMPILED_DIR.glob("*.json")) == \
        sorted(f"{fs.name}.v{fs.version}.json" for fs in ALL)


def test_load_compiled_gives_the_definitions_back():
    assert compiler.load_compiled() == sorted(ALL, key=lambda fs: (fs.name, fs.version))
    assert [fs.ref for fs in compiler.load_compiled(["spending", "risk.v1"])] == \
        ["risk.v1", "spending.v1", "spending.v2"]  # a bare name: every version
    with pytest.raises(compiler.CompileError, match=r"no compiled spec for spending.v9"):
        compiler.load_compiled(["spending.v9"])


def test_engines_load_compiled_json_without_importing_the_definitions():
    code = ("import sys; from mercury.features.definition.compile import load_compiled; "
            "sets = load_compiled(); "
            "assert not [m for m in sys.modules if m.startswith('mercury.features.definitions')]; "
            "print(len(sets))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(len(ALL))


def test_check_names_a_stale_file_after_a_definition_changes(tmp_path):
    compiler.compile_all(tmp_path, ALL)
    compiler.check(tmp_path, ALL)
    changed = [dataclasses.replace(fs, ttl="40d") if fs.ref == "spending.v1" else fs for fs in ALL]
    with pytest.raises(compiler.CompileError) as failed:
        compiler.check(tmp_path, changed)
    message = str(failed.value)
    assert f"stale: {tmp_path / 'spending.v1.json'}" in message
    assert "1 compiled spec(s) out of date" in message and "risk.v1.json" not in message
    result = compiler.compile_all(tmp_path, changed)
    assert result.written == ["spending.v1.json"] and len(result.unchanged) == len(ALL) - 1
    compiler.check(tmp_path, changed)


def test_check_names_missing_and_extra_files_after_a_version_bump(tmp_path):
    compiler.compile_all(tmp_path, ALL)
    bumped = [dataclasses.replace(fs, version=2) if fs.name == "risk" else fs for fs in ALL]
    with pytest.raises(compiler.CompileError) as failed:
        compiler.check(tmp_path, bumped)
    message = str(failed.value)
    assert f"missing: {tmp_path / 'risk.v2.json'}" in message
    assert f"extra: {tmp_path / 'risk.v1.json'}" in message
    assert compiler.compile_all(tmp_path, bumped).removed == ["risk.v1.json"]
    assert sorted(p.name for p in tmp_path.iterdir())[-3:] == \
        ["risk.v2.json", "spending.v1.json", "spending.v2.json"]


def test_check_names_a_compiled_file_with_a_dangling_reference(tmp_path):
    compiler.compile_all(tmp_path, ALL)
    path = tmp_path / "spending.v1.json"
    data = json.loads(path.read_text())
    data["features"][0]["column"] = "amount_eur"  # as if the contract dropped a column
    path.write_text(json.dumps(data, sort_keys=True, indent=2) + "\n")
    with pytest.raises(compiler.CompileError,
                       match=r"spending.v1.json: spending: settled_amount column 'amount_eur' "
                             r"is not a column of transactions"):
        compiler.load_compiled(directory=tmp_path)
    assert compiler.problems(tmp_path, ALL) == [
        f"stale: {path} differs from its definition (recompile; bump the version if values "
        f"change)"]


def test_one_version_cannot_be_defined_twice_differently(tmp_path):
    other = dataclasses.replace(spending, ttl="40d")
    with pytest.raises(compiler.CompileError, match=r"spending.v1 is defined twice"):
        compiler.compile_all(tmp_path, [spending, other])


def test_cli_compile_check_list_and_promote_refusal(capsys):
    parser = argparse.ArgumentParser(prog="mercury")
    from mercury.features.cli import register

    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["features", "compile", "--check"])
    assert args.run(args) == 0
    args = parser.parse_args(["features", "list"])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert "spending.v1" in out and "settled_amount" in out and "1h 1d 7d 30d" in out
    assert "sum(amount) per currency" in out and "last 20 by purchase_id" in out
    args = parser.parse_args(["features", "promote", "spending", "9"])
    from mercury.errors import CommandError

    with pytest.raises(CommandError, match=r"cannot promote: no compiled spec for spending.v9"):
        args.run(args)


# ---- windows: tile-range edges -------------------------------------------------------------

@pytest.mark.parametrize("text, length, hop", [
    ("1h", HOUR_MS, 5 * MINUTE_MS), ("24h", DAY_MS, HOUR_MS), ("7d", 7 * DAY_MS, HOUR_MS),
    ("30d", 30 * DAY_MS, DAY_MS), ("45m", 45 * MINUTE_MS, 5 * MINUTE_MS)])
def test_window_hops_and_labels(text, length, hop):
    w = window(text)
    assert (w.length_ms, w.hop_ms, w.tiles) == (length, hop, length // hop)
    assert window("24h").label == "1d" and window("60m").label == "1h"


@pytest.mark.parametrize("text", ["1h", "24h", "7d", "30d"])
def test_last_ms_of_a_tile_covers_exactly_the_window(text):
    w = window(text)
    k = 1_793_491_200_000 // w.hop_ms + 17
    t = (k + 1) * w.hop_ms - 1  # the last millisecond of tile k
    assert w.tile_range(t) == (k - w.tiles + 1, k)
    assert w.covers(t - w.length_ms + 1, t)       # (t - W, t]: the oldest ms is in
    assert not w.covers(t - w.length_ms, t)       # ... and one before it is out
    assert w.covers(t, t) and not w.covers(t + 1, t)


@pytest.mark.parametrize("text", ["1h", "24h", "7d", "30d"])
def test_first_ms_of_the_next_tile_drops_a_whole_hop(text):
    w = window(text)
    k = 1_793_491_200_000 // w.hop_ms + 17
    t = (k + 1) * w.hop_ms  # the first millisecond of tile k + 1
    assert w.tile_range(t) == (k - w.tiles + 2, k + 1)
    oldest = (k - w.tiles + 2) * w.hop_ms
    assert w.covers(oldest, t) and not w.covers(oldest - 1, t)
    assert oldest == t - w.length_ms + w.hop_ms  # a whole hop of (t - W, t] not yet counted
    assert w.covers(t, t) and not w.covers(t + 1, t)
