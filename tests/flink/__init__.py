"""Tests that run in the Flink env (PyFlink). The main suite runs them through
``tests/test_flink_env.py``; by hand:
``infra/envs/flink/.venv/bin/python -m pytest tests/flink --confcutdir tests/flink``."""
