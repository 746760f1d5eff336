"""A new user's first ten minutes: the README's commands, the Railway files, the test and CI entry points.

test_readme_commands_work_verbatim_in_a_fresh_clone copies the repository's tracked files (what a
clone holds) to a temporary directory and runs the first code block of the README's "Run it" and of
its "Tests" with Debian's own /usr/bin/python3, which refuses `pip install` outside a virtual
environment (PEP 668). It installs from PyPI into the copy's .venv and takes a minute or two; it is
marked fresh_clone (./test.sh -m "not fresh_clone" leaves it out).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_for

README = (ROOT / "README.md").read_text()
SYSTEM_PYTHON = Path("/usr/bin/python3")
# The design documents' start-up lines, as the README shows them.
START_UP_LINES = [
    "Starting schedule daemon",
    "Schedule daemon registered: ",
    "Synced 4 schedule definitions from code",
    "Missed Run Policy: SKIP",
    "Loaded 4 schedule definitions from code",
    "Polling every 60s",
]


def readme_command(section: str) -> str:
    """The first ```sh block under the README's `## section` heading."""
    body = README.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", body, re.S)
    assert block, f"no sh code block in the README's {section!r} section"
    return block.group(1).strip()


def fresh_copy(destination: Path) -> Path:
    """The repository's tracked files as they are in this checkout (committed or not), as a clone would hold them."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True) if shutil.which("git") else None
    if listed is not None and listed.returncode == 0:
        for name in listed.stdout.decode().split("\0"):
            if name and (ROOT / name).is_file():
                (destination / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, destination / name)
    else:  # an export without git: everything but what the checkout made
        shutil.copytree(
            ROOT,
            destination,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns(
                ".git", ".venv", "__pycache__", "*.db", "*.db-*", ".admin-token", ".pytest_cache", ".hypothesis"
            ),
        )
    return destination


def new_user_environment() -> dict[str, str]:
    """A login shell's environment: the system's PATH (python3 is /usr/bin/python3), no venv, no project variables."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
    }
    # A proxy or a PyPI mirror is part of the machine, not of the project: keep them.
    env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_") or k.lower().endswith("_proxy")})
    return env


def system_python_is_externally_managed() -> str | None:
    """Why /usr/bin/python3 cannot stand in for a fresh Debian's, or None when it can."""
    if not SYSTEM_PYTHON.exists():
        return "there is no /usr/bin/python3"
    probe = subprocess.run(
        [
            str(SYSTEM_PYTHON),
            "-c",
            "import sys, sysconfig, ensurepip, venv, pathlib; "
            "print(sys.version_info >= (3, 11), pathlib.Path(sysconfig.get_path('stdlib'), "
            "'EXTERNALLY-MANAGED').exists())",
        ],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return "/usr/bin/python3 has no venv module (apt-get install python3-venv)"
    if probe.stdout.split() != ["True", "True"]:
        return f"/usr/bin/python3 is not an externally managed Python 3.11+ (version >= 3.11, managed: {probe.stdout.strip()})"
    return None


@pytest.mark.fresh_clone
def test_readme_commands_work_verbatim_in_a_fresh_clone(tmp_path):
    reason = system_python_is_externally_managed()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    run_command, test_command = readme_command("Run it"), readme_command("Tests")
    assert "--break-system-packages" not in run_command + test_command and "--user" not in run_command
    checkout = fresh_copy(tmp_path / "checkout")
    env = new_user_environment()

    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        run = subprocess.Popen(
            ["sh", "-c", run_command],
            cwd=checkout,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: "Polling every" in log_path.read_text() or run.poll() is not None,
            900,
            "the README's run command to start the daemon",
        )
        output = log_path.read_text()
        assert run.poll() is None, output
        for line in START_UP_LINES:
            assert line in output, (line, output)
        assert (checkout / ".venv" / "bin" / "python").exists() and (checkout / "schedules.db").exists()
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGTERM)
        run.wait(timeout=60)
    wait_for(lambda: " stopped (" in log_path.read_text(), 60, "the daemon to stop on SIGTERM")

    # The test command as written, on one small test file: PYTEST_ADDOPTS narrows pytest's selection.
    tested = subprocess.run(
        ["sh", "-c", test_command],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**env, "CI": os.environ.get("CI", ""), "PYTEST_ADDOPTS": "tests/test_cron.py -p no:cacheprovider"},
    )
    closing = tested.stdout.strip().splitlines()[-1] if tested.stdout.strip() else ""
    assert tested.returncode == 0 and re.search(r"\d+ passed", closing), tested.stdout[-3000:] + tested.stderr[-3000:]


# -- the files a deploy and CI read ------------------------------------------------------------------------


SERVICES = {
    "web": "python admin_server.py",
    "daemon": "python schedule_daemon.py",
    "worker": "python schedule_daemon.py --worker",
}


@pytest.mark.parametrize("service", SERVICES)
def test_each_railway_service_file_starts_its_program_behind_the_definitions_check(service):
    deploy = json.loads((ROOT / "railway" / f"{service}.json").read_text())["deploy"]
    assert deploy["startCommand"] == SERVICES[service]
    assert deploy["preDeployCommand"] == ["python schedule_daemon.py --check"]
    assert deploy["restartPolicyType"] == "ON_FAILURE" and deploy["restartPolicyMaxRetries"] == 10
    # Railway's parser wants a number here; 40 s covers the 25 s shutdown grace, the 10 s between a job's
    # SIGTERM and SIGKILL (JOB_KILL_GRACE_S) and recording the outcome.
    assert type(deploy["drainingSeconds"]) is int and deploy["drainingSeconds"] == 40
    assert deploy.get("healthcheckPath") == ("/healthz" if service == "web" else None)
    assert f"{service}: {SERVICES[service]}" in (ROOT / "Procfile").read_text().splitlines()
    assert f"`/railway/{service}.json`" in README


def test_the_pre_deploy_check_passes_and_the_start_commands_take_their_flags():
    check = subprocess.run(
        [sys.executable, "schedule_daemon.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "APP_ENV": "production"},
    )
    assert check.returncode == 0, check.stdout + check.stderr
    usage = subprocess.run(
        [sys.executable, "schedule_daemon.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    ).stdout
    assert "--worker" in usage and "--check" in usage


def test_ci_runs_exactly_the_readme_test_command():
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[-1] == f"exec {readme_command('Tests')}"
    assert os.access(ROOT / ".ci" / "run", os.X_OK) and os.access(ROOT / "test.sh", os.X_OK)
