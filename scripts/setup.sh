#!/usr/bin/env bash
# One-command set-up from a fresh clone: uv, then the locked environments.
#   .venv                     main env: Airflow, dbt, Spark, Great Expectations, pyiceberg, ...
#   infra/envs/flink/.venv    Flink env: apache-flink 2.3 (its pins cannot share the main env)
#   infra/envs/checkov/.venv  checkov, the Terraform scan (its pins cannot share it either)
# Safe to re-run: uv only installs what the lock files say is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
PYTHON_VERSION=3.11

if ! command -v python3 >/dev/null; then
  echo "setup: python3 is not installed; install Python ${PYTHON_VERSION}" >&2; exit 1
fi
if ! command -v uv >/dev/null || [[ "$(uv --version | cut -d' ' -f2)" != "${UV_VERSION}" ]]; then
  echo "setup: installing uv ${UV_VERSION}"
  python3 -m pip install --quiet "uv==${UV_VERSION}" \
    || { echo "setup: could not install uv from PyPI; check the network or pip config" >&2; exit 1; }
fi
UV="$(command -v uv || echo "$(python3 -m site --user-base)/bin/uv")"

# uv ignores pip's configuration; honour the machine's local wheel folders (a CPU build of
# torch lives there) when PIP_FIND_LINKS is set, so nothing pulls CUDA wheels from PyPI.
find_links=()
for folder in ${PIP_FIND_LINKS:-}; do find_links+=(--find-links "${folder}"); done

echo "setup: main env (.venv)"
"${UV}" sync --locked --quiet --python "${PYTHON_VERSION}" "${find_links[@]}"
echo "setup: Flink env (infra/envs/flink/.venv)"
(cd infra/envs/flink && "${UV}" sync --locked --quiet --python "${PYTHON_VERSION}" "${find_links[@]}")
# checkov scans infra/terraform in the tests; its pins (cachetools<6) cannot share the main env.
echo "setup: checkov env (infra/envs/checkov/.venv)"
(cd infra/envs/checkov && "${UV}" sync --locked --quiet --python "${PYTHON_VERSION}")

if ! command -v java >/dev/null; then
  echo "setup: warning: java is not installed; the Flink cluster needs JDK 17 (apt-get install openjdk-17-jdk-headless)" >&2
fi
# The online-features job's one Java function (JSON_FIELDS), built against the Flink env's jars.
if command -v javac >/dev/null; then
  bash infra/flink-udf/build.sh
else
  echo "setup: warning: javac is not installed; the SQL streaming job needs it (apt-get install openjdk-17-jdk-headless)" >&2
fi
# The monitoring stack: Prometheus (with promtool, which checks the config and unit-tests the
# alert rules: tests/test_monitoring_rules.py), Alertmanager and the node exporter (the batch
# jobs' metric files), Debian packages; `mercury stack up` runs them. Where systemd runs
# services, the packages also start their own servers on :9090 / :9093 / :9100: stop those if
# unwanted.
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null \
  || missing+=(prometheus-alertmanager)
command -v prometheus-node-exporter >/dev/null || command -v node_exporter >/dev/null \
  || missing+=(prometheus-node-exporter)
# The Airflow UI is tested as its users use it, in a browser (tests/test_airflow_ui.py).
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if (( ${#missing[@]} )); then
  if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
    echo "setup: installing ${missing[*]} (Debian)"
    apt_install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}")
    "${apt_install[@]}" >/dev/null 2>&1 || { apt-get update -qq && "${apt_install[@]}" >/dev/null; } \
      || echo "setup: warning: could not install ${missing[*]}; the monitoring and browser tests need them" >&2
  else
    echo "setup: warning: ${missing[*]} not installed; the monitoring and browser tests need them (apt-get install ${missing[*]})" >&2
  fi
fi
echo "setup: done"
