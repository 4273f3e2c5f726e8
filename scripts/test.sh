#!/usr/bin/env bash
# The test command (README quick start, and what .ci/run calls): set up, then run the suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow" -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

# DeepSpeed too, so that the ZeRO-2/3 tests run on CPU processes instead of skipping (~30 s to install).
EXTRAS="${EXTRAS:-dev,gguf,deepspeed}" bash scripts/setup.sh
# The report test renders report.html in headless Chromium; without it that test skips.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "chromium could not be installed: the report rendering test will be skipped" >&2
fi
# The whole suite must cover at least 85% of the engine and the plugins; a narrowed run
# (extra pytest arguments) only reports coverage.
floor=()
[ "$#" -eq 0 ] && floor=(--cov-fail-under=85)
set +e
.venv/bin/python -m pytest --cov=entity_training --cov=plugins --cov-report=term "${floor[@]}" "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass." >&2
  exit 1
fi
exit "$status"
