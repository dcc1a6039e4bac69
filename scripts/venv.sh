# Sourced by the other scripts: make sure .venv exists and matches the lock file.
# Creates it on a fresh machine; reinstalls only when requirements.lock or pyproject.toml change.

find_python() {
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "DFE needs Python 3.11 or newer (none found on PATH)" >&2
    return 1
}

ensure_venv() {
    local stamp=.venv/.dfe-installed
    local wanted
    wanted=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
        return 0
    fi
    if [ ! -x .venv/bin/python ]; then
        echo "creating .venv ..." >&2
        "$(find_python)" -m venv .venv
    fi
    echo "installing dependencies from requirements.lock ..." >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
    echo "$wanted" > "$stamp"
}

ensure_venv
