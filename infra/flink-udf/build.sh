#!/usr/bin/env bash
# Builds build/mercury-flink-udf.jar (the job's JSON_FIELDS function) when a source is newer.
set -euo pipefail
cd "$(dirname "$0")"
JAR=build/mercury-flink-udf.jar
LIB="$(ls -d ../envs/flink/.venv/lib/python3.*/site-packages/pyflink/lib | head -1)"
if [[ -f "${JAR}" && -z "$(find src -name '*.java' -newer "${JAR}")" ]]; then
  exit 0
fi
echo "setup: building ${JAR}"
rm -rf build/classes && mkdir -p build/classes
javac --release 17 -nowarn -cp "${LIB}/flink-dist-2.3.0.jar:${LIB}/flink-table-api-java-uber-2.3.0.jar" \
  -d build/classes $(find src -name '*.java')
jar cf "${JAR}" -C build/classes .
