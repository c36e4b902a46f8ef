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

# Create .venv if needed and (re)install leadhook into it when pyproject.toml changed since the
# last install: with its development tools for `ensure_venv dev` (scripts/test), the package
# alone otherwise (scripts/serve: a first start need not wait for the test tools, about three
# times the download). An install with the tools serves as well.
ensure_venv() {
  local with_dev=${1:-}
  local dev_stamp=.venv/.leadhook-installed run_stamp=.venv/.leadhook-installed-runtime
  if [ ! -x .venv/bin/python ]; then
    echo "Creating .venv ..." >&2
    "$(find_python)" -m venv .venv || {
      echo "python -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
      return 1
    }
  fi
  if installed "$dev_stamp" || { [ "$with_dev" != dev ] && installed "$run_stamp"; }; then
    return 0
  fi
  if [ "$with_dev" = dev ]; then
    echo "Installing leadhook and its development tools into .venv (quietly) ..." >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' || return 1
    touch "$dev_stamp"
  else
    echo "Installing leadhook into .venv (quietly) ..." >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e . || return 1
    touch "$run_stamp"
  fi
}

# Whether the install that `stamp` marks is there and newer than pyproject.toml.
installed() {
  [ -f "$1" ] && [ ! pyproject.toml -nt "$1" ]
}
