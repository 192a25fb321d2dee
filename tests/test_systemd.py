"""The shipped systemd unit is valid and sandboxed. systemd is not PID 1 on these machines, so
the unit never runs here: systemd-analyze checks it offline (docs/operations.md says so)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "config" / "systemd" / "archiver.service"
# Exposure as systemd-analyze security prints it, times ten: 2.0 is "OK" (under 4.0 is good).
MAX_EXPOSURE = 20


def _unit_for_this_machine(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's archiver: verify needs the binary."""
    archiver = Path(sys.executable).parent / "archiver"
    assert archiver.is_file()
    unit = tmp_path / "archiver.service"
    unit.write_text(UNIT.read_text().replace("/opt/archiver/bin/archiver", str(archiver)))
    return unit


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is required (make test installs the systemd package)"
    return subprocess.run([analyze, *args], capture_output=True, text=True, timeout=120)


def test_the_unit_verifies(tmp_path: Path) -> None:
    result = _analyze("verify", str(_unit_for_this_machine(tmp_path)))
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_the_unit_is_sandboxed(tmp_path: Path) -> None:
    result = _analyze("security", "--offline=yes", f"--threshold={MAX_EXPOSURE}", str(_unit_for_this_machine(tmp_path)))
    assert result.returncode == 0, result.stdout[-2000:]
    assert "Overall exposure level for archiver.service" in result.stdout


def test_the_unit_stops_with_sigterm_within_its_timeout() -> None:
    text = UNIT.read_text()
    assert "KillSignal=SIGTERM" in text and "Restart=on-failure" in text and "StateDirectory=archiver" in text
    stop = int(next(line for line in text.splitlines() if line.startswith("TimeoutStopSec=")).split("=")[1])
    assert stop > 30  # server.shutdown_timeout's default, plus sealing and the last publish
