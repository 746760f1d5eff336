#!/usr/bin/env bash
# The whole test suite on a fresh machine, set-up included:   ./test.sh [pytest arguments]
#
# 1. What the suite needs from the system: MariaDB (the MySQL half of every SQL test), Chromium and its
#    driver (the admin page test), libfaketime (a daemon with a skewed clock), Python's venv module.
#    On Debian or Ubuntu as root, whatever is missing is installed with apt-get; elsewhere this says
#    what is missing and which tests it skips (under CI=true the suite fails instead of skipping).
# 2. A virtual environment in .venv (made with $PYTHON, default python3, 3.11 or newer) with
#    requirements-test.txt installed: the system's Python is never touched (PEP 668).
# 3. With a pyproject.toml: ruff check, ruff format --check and mypy (files and strictness from it).
# 4. pytest, with any arguments given (e.g. ./test.sh tests/test_cron.py -x).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

say() { echo "test.sh: $*" >&2; }
has_venv() { "$1" -c 'import ensurepip, venv' 2>/dev/null; }

missing=()
command -v mariadb-install-db >/dev/null && { command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ]; } \
    || missing+=(mariadb-server)
command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || missing+=(chromium)
command -v chromedriver >/dev/null || [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || missing+=(libfaketime)
if command -v apt-get >/dev/null; then
    # Debian's own /usr/bin/python3 is what tests/test_newcomer.py tries the README's commands with.
    { [ -x /usr/bin/python3 ] && has_venv /usr/bin/python3; } || missing+=(python3 python3-venv)
fi

if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    missing=()
fi
for package in ${missing[@]+"${missing[@]}"}; do  # the + form: macOS's bash 3.2 calls an empty array unbound
    case $package in
        mariadb-server) say "MariaDB is missing: the MySQL half of the suite is skipped (apt-get install mariadb-server; brew install mariadb)" ;;
        chromium|chromium-driver) say "$package is missing: tests/test_admin_page.py is skipped (apt-get install chromium chromium-driver)" ;;
        libfaketime) say "libfaketime is missing: tests/test_faults.py's skewed-clock test fails (apt-get install libfaketime)" ;;
        python3-venv) say "/usr/bin/python3 has no venv: tests/test_newcomer.py's fresh-clone test is skipped (apt-get install python3-venv)" ;;
    esac
done

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    say "$PYTHON is missing or older than Python 3.11: install one, or set PYTHON=/path/to/python3.11+"
    exit 1
fi
if ! has_venv "$PYTHON"; then
    say "$PYTHON cannot create a virtual environment: install python3-venv (Debian, Ubuntu)"
    exit 1
fi
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    say "creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv --clear .venv
fi
say "installing requirements-test.txt into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-test.txt

if [ -f pyproject.toml ]; then
    .venv/bin/python -m ruff check .
    .venv/bin/python -m ruff format --check .
    .venv/bin/python -m mypy
fi

exec .venv/bin/python -m pytest "$@"
