#!/usr/bin/env bash
# Creates .venv (if needed) and installs refbook with its test dependencies into it.
# Sourced by the other scripts; safe to run again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.refbook-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[test]"
  touch "$stamp"
elif [ -n "$(find labextension/src labextension/style labextension/package.json \
             -newer "$stamp" -print -quit 2>/dev/null)" ] \
     || [ ! -f refbook/labextension/package.json ]; then
  # the sidebar's sources changed since the install: build it again (no reinstall)
  (cd labextension && PATH="$root/.venv/bin:$PATH" "$root/.venv/bin/jlpm" install --silent \
     && PATH="$root/.venv/bin:$PATH" "$root/.venv/bin/jlpm" build)
  touch "$stamp"
fi
