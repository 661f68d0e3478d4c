"""infra/ensure-chromium, which `make test` runs first: on a machine without the browser
tests' Chromium it installs it when it may (root or passwordless sudo, with apt-get), else
stops with one line naming the command to run (issue 25).

Each test runs the real script with `/bin/sh`, a PATH of stand-ins only (`id`, `apt-get`,
`sudo`, recording what they are asked) and CHROMIUM_PATH / CHROMEDRIVER_PATH in a temp
dir, so nothing is installed on or removed from this machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "ensure-chromium"
INSTALL_COMMAND = "sudo apt-get update && sudo apt-get install -y chromium chromium-driver"

# Records each call as "<tool> <args> [DEBIAN_FRONTEND]"; `install` makes both binaries.
FAKE_APT_GET = """#!/bin/sh
echo "apt-get $* ${DEBIAN_FRONTEND:-}" >> "$CALLS"
[ "${APT_FAILS:-}" = 1 ] && exit 100
if [ "$1" = install ] && [ "${APT_INSTALLS_NOTHING:-}" != 1 ]; then
  printf '#!/bin/sh\\n' > "$CHROMIUM_PATH"; printf '#!/bin/sh\\n' > "$CHROMEDRIVER_PATH"
  /bin/chmod +x "$CHROMIUM_PATH" "$CHROMEDRIVER_PATH"
fi
exit 0
"""
# Passwordless sudo: runs the command (without -n) and records it.
FAKE_SUDO = """#!/bin/sh
echo "sudo $*" >> "$CALLS"
[ "$1" = -n ] && shift
exec "$@"
"""
# sudo that wants a password: with -n it refuses everything.
FAKE_SUDO_PASSWORD = """#!/bin/sh
echo "sudo $*" >> "$CALLS"
echo "sudo: a password is required" >&2
exit 1
"""


@dataclass
class Machine:
    """A PATH of stand-ins and where the two binaries belong."""

    root: Path
    bin: Path
    chromium: Path
    chromedriver: Path
    calls: Path

    def tool(self, name: str, script: str) -> None:
        path = self.bin / name
        path.write_text(script)
        path.chmod(0o755)

    def user(self, uid: int) -> None:
        self.tool("id", f'#!/bin/sh\n[ "$1" = -u ] && echo {uid}\n')

    def real(self, *names: str) -> None:
        for name in names:
            found = shutil.which(name)
            assert found, name
            (self.bin / name).symlink_to(found)

    def env(self, **extra: str) -> dict[str, str]:
        return {"PATH": str(self.bin), "CALLS": str(self.calls),
                "CHROMIUM_PATH": str(self.chromium), "CHROMEDRIVER_PATH": str(self.chromedriver),
                **extra}

    def run(self, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["/bin/sh", str(SCRIPT)], env=self.env(**extra), cwd=self.root,
                              capture_output=True, text=True, timeout=30)

    def recorded(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    """No Chromium, no chromedriver, not root, no apt-get, no sudo; `env` (the script runs
    apt-get through it) and `true` (what it asks sudo to run) only."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "usr-bin").mkdir()
    fake = Machine(tmp_path, tmp_path / "bin", tmp_path / "usr-bin" / "chromium",
                   tmp_path / "usr-bin" / "chromedriver", tmp_path / "calls.log")
    fake.real("env", "true")
    fake.user(1000)
    return fake


def installed(machine: Machine) -> bool:
    return all(os.access(path, os.X_OK) for path in (machine.chromium, machine.chromedriver))


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_with_chromium_and_its_driver_present_it_does_nothing(machine: Machine) -> None:
    for path in (machine.chromium, machine.chromedriver):
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    machine.user(0)
    machine.tool("apt-get", FAKE_APT_GET)
    result = machine.run()
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert machine.recorded() == []


def test_not_root_without_sudo_it_stops_naming_the_one_install_command(machine: Machine) -> None:
    machine.tool("apt-get", FAKE_APT_GET)
    result = machine.run()
    assert result.returncode == 1
    assert one_line(result.stderr).endswith(f"run: {INSTALL_COMMAND}")
    assert machine.recorded() == []


def test_not_root_with_sudo_that_asks_a_password_it_stops_the_same_way(machine: Machine) -> None:
    machine.tool("apt-get", FAKE_APT_GET)
    machine.tool("sudo", FAKE_SUDO_PASSWORD)
    result = machine.run()
    assert result.returncode == 1
    assert one_line(result.stderr).endswith(f"run: {INSTALL_COMMAND}")
    assert machine.recorded() == ["sudo -n true"]  # asked, never waited for a password


def test_without_apt_get_it_stops_naming_the_packages_and_paths(machine: Machine) -> None:
    machine.user(0)
    result = machine.run()
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "chromium chromium-driver" in line and "no apt-get" in line
    assert str(machine.chromium) in line and str(machine.chromedriver) in line


def test_as_root_it_installs_both_packages_as_ci_does(machine: Machine) -> None:
    machine.user(0)
    machine.tool("apt-get", FAKE_APT_GET)
    result = machine.run()
    assert result.returncode == 0, result.stderr
    assert machine.recorded() == ["apt-get update -qq noninteractive",
                                  "apt-get install -y -qq chromium chromium-driver noninteractive"]
    assert installed(machine)


def test_with_passwordless_sudo_it_installs_through_sudo(machine: Machine) -> None:
    machine.tool("apt-get", FAKE_APT_GET)
    machine.tool("sudo", FAKE_SUDO)
    result = machine.run()
    assert result.returncode == 0, result.stderr
    assert machine.recorded() == [
        "sudo -n true",
        "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update -qq",
        "apt-get update -qq noninteractive",
        "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver",
        "apt-get install -y -qq chromium chromium-driver noninteractive",
    ]
    assert installed(machine)


def test_a_missing_driver_alone_is_installed_too(machine: Machine) -> None:
    machine.chromium.write_text("#!/bin/sh\n")
    machine.chromium.chmod(0o755)
    machine.user(0)
    machine.tool("apt-get", FAKE_APT_GET)
    assert machine.run().returncode == 0
    assert installed(machine)


def test_a_failing_apt_get_fails(machine: Machine) -> None:
    machine.user(0)
    machine.tool("apt-get", FAKE_APT_GET)
    result = machine.run(APT_FAILS="1")
    assert result.returncode != 0
    assert machine.recorded() == ["apt-get update -qq noninteractive"]


def test_packages_that_leave_the_binaries_missing_fail_with_one_line(machine: Machine) -> None:
    machine.user(0)
    machine.tool("apt-get", FAKE_APT_GET)
    result = machine.run(APT_INSTALLS_NOTHING="1")
    assert result.returncode == 1
    assert "still missing" in result.stderr.strip().splitlines()[-1]


def test_make_test_stops_before_installing_or_testing_when_it_cannot_install(
        machine: Machine) -> None:
    """The real `make test`, with the virtualenvs pointed into the temp dir and no
    python on PATH: had it gone on past the check, its install step would show."""
    machine.tool("apt-get", FAKE_APT_GET)
    machine.real("make", "sh")
    venv = machine.root / "venv"
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "test", f"VENV={venv}",
         f"SAM_VENV={machine.root / 'venv-sam'}", "PYTHON=false", "PYTHON312=/nonexistent"],
        env=machine.env(), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"run: {INSTALL_COMMAND}" in result.stderr
    assert str(venv) not in result.stdout + result.stderr  # the install never started
    assert "pytest" not in result.stdout
    assert not venv.exists()
