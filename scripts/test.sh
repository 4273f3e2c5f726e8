#!/usr/bin/env bash
# The test command (README quick start, and what .ci/run calls): set up, then run the suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow" -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
set +e
.venv/bin/python -m pytest --cov=entity_training --cov=plugins --cov-report=term "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass." >&2
  exit 1
fi
exit "$status"
