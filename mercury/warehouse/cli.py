"""``mercury warehouse nodes [--check]``: the dbt nodes the ``warehouse_marts`` DAG renders.

``register(subparsers)`` adds the command to the ``mercury`` parser. Without ``--check`` it
rewrites ``dbt/cosmos/warehouse_marts.jsonl`` from ``dbt ls``; with it, it exits 1 naming the
nodes that changed since the file was written (run it after editing a model, a test or a
source of the lake or feature marts).
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> argparse.ArgumentParser:
    # Builds the parser only: dbt runs when the command does.
    command = subparsers.add_parser(
        "warehouse", help="the dbt nodes the warehouse_marts DAG renders (dbt ls, committed)")
    actions = command.add_subparsers(dest="action", required=True, metavar="ACTION")
    nodes = actions.add_parser("nodes", help="rewrite dbt/cosmos/warehouse_marts.jsonl")
    nodes.add_argument("--check", action="store_true",
                       help="fail (naming the nodes) if the file is not what dbt lists now")
    nodes.set_defaults(run=_nodes)
    return command


def _nodes(args) -> int:
    from mercury.config import load_settings
    from mercury.warehouse import marts

    settings = load_settings()
    try:
        if args.check:
            count = marts.check_nodes(settings)
            print(f"{marts.NODES_FILE}: up to date ({count} nodes)")
        else:
            count = marts.write_nodes(settings)
            print(f"{marts.NODES_FILE}: {count} nodes written")
    except marts.MartsError as exc:
        print(f"mercury warehouse nodes: {exc}", file=sys.stderr)
        return 1
    return 0
