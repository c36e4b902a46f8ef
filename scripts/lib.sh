# Shell functions shared by scripts/serve and scripts/test; sourced (`. scripts/lib.sh`) from the
# repository root, which is where both scripts `cd` first. Not a command of its own.

# Print the first Python 3.11 or newer found ($PYTHON first), or fail saying what is needed.
find_python() {
  local candidate
  for candidate in ${PYTHON:-} python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "leadhook needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

# Create .venv if needed and (re)install leadhook with its development tools into it when
# pyproject.toml changed since the last install.
ensure_venv() {
  local stamp=.venv/.leadhook-installed
  if [ ! -x .venv/bin/python ]; then
    echo "Creating .venv ..." >&2
    "$(find_python)" -m venv .venv || {
      echo "python -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
      return 1
    }
  fi
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "Installing leadhook and its development tools into .venv (quietly) ..." >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' || return 1
    touch "$stamp"
  fi
}
