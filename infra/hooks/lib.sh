# Shared by the POSIX azd hooks (sourced, not run). POSIX sh; azd passes the environment's values
# (azd env get-values) to hooks as environment variables.

say() { printf '%s: %s\n' "$HOOK" "$*"; }
die() { printf '%s: %s\n' "$HOOK" "$*" >&2; exit 1; }

require() {
  for name in "$@"; do
    eval "value=\${$name:-}"
    # shellcheck disable=SC2154
    [ -n "$value" ] || die "$name is not set; run: azd env set $name <value> (see infra/README.md)"
  done
}

# A Python that has the project installed (for `retrain check-policy` and PyYAML): RETRAIN_HOOK_PYTHON,
# else the repository's .venv (make install), else a virtual environment made once under the azd
# environment's folder (.azure/<env>/hook-venv) from requirements.txt and the project itself.
project_python() {
  for candidate in "${RETRAIN_HOOK_PYTHON:-}" ./.venv/bin/python; do
    if [ -n "$candidate" ] && "$candidate" -c "import function_app.cli, yaml" >/dev/null 2>&1; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  venv="./.azure/${AZURE_ENV_NAME:-default}/hook-venv"
  if ! "$venv/bin/python" -c "import function_app.cli, yaml" >/dev/null 2>&1; then
    say "installing the project into $venv to validate the policy (once)" >&2
    python3 -m venv "$venv" >&2 || die "python3 -m venv failed: install Python 3.11, or run make install"
    "$venv/bin/python" -m pip install -q -r requirements.txt >&2 || die "pip install -r requirements.txt failed"
    "$venv/bin/python" -m pip install -q --no-deps . >&2 || die "pip install of the project failed"
  fi
  printf '%s\n' "$venv/bin/python"
}

# Validate the policy exactly as the app does at start-up; stop with its own message otherwise.
check_policy() {
  python=$1
  policy=$2
  if ! "$python" -m function_app.cli check-policy "$policy"; then
    die "the policy $policy is not valid (above); fix it, or point RETRAIN_POLICY_PATH at the right file: azd env set RETRAIN_POLICY_PATH <path>"
  fi
  "$python" "$HOOKS/hooklib.py" packaged "$policy" || die "move the policy, or change .funcignore"
}
