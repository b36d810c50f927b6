"""A thin, checked wrapper around the `adb` command line (Android Debug Bridge)."""
from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import PipelineError

log = logging.getLogger(__name__)

READY_STATE = "device"  # `adb devices` state of a phone that accepts commands


def find_adb(executable: str = "adb") -> str | None:
    """The adb executable (a name looked up on PATH, or a path), or None when there is none."""
    if "/" in executable:
        return executable if Path(executable).is_file() else None
    return shutil.which(executable)


def parse_devices(output: str) -> list[tuple[str, str]]:
    """(serial, state) pairs from `adb devices` output (the header and daemon notices skipped)."""
    devices = []
    for line in output.splitlines():
        line = line.strip()
        if not line or line.startswith("*") or line.lower().startswith("list of devices"):
            continue
        parts = line.split()
        if len(parts) >= 2:
            devices.append((parts[0], parts[1]))
    return devices


@dataclass
class Adb:
    """Runs adb commands against one device (`serial`, or the only one when None)."""

    executable: str
    serial: str | None = None
    timeout_s: float = 600.0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [self.executable] + (["-s", self.serial] if self.serial else []) + list(args)
        log.debug("adb: %s", shlex.join(command))
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            raise PipelineError(f"adb {' '.join(args[:2])}: no answer within {self.timeout_s:.0f} s") from None
        except OSError as exc:
            raise PipelineError(f"{self.executable}: cannot run adb ({exc.strerror or exc})") from None
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise PipelineError(
                f"adb {' '.join(args[:2])} failed (exit {result.returncode}): {detail[-1] if detail else 'no output'}"
            )
        return result

    def devices(self) -> list[tuple[str, str]]:
        return parse_devices(Adb(self.executable, None, self.timeout_s)._run("devices").stdout)

    def getprop(self, name: str) -> str:
        return self._run("shell", "getprop", name).stdout.strip()

    def push(self, local: str | Path, remote: str) -> None:
        self._run("push", str(local), remote)

    def shell(self, command: str) -> str:
        """Run a shell command line on the device; its stdout and stderr together."""
        result = self._run("shell", command)
        return result.stdout + result.stderr


def ready_devices(adb_executable: str) -> list[str]:
    """Serials of attached devices in state `device` (an unauthorised or offline phone is not ready)."""
    return [serial for serial, state in Adb(adb_executable).devices() if state == READY_STATE]


def connect(adb_executable: str | None, serial: str | None) -> Adb:
    """An Adb bound to a ready device: `serial` if given, else the only ready one; clear errors otherwise."""
    if adb_executable is None:
        raise PipelineError("mobile.device is adb but no adb executable was found (install Android platform-tools or set mobile.adb)")
    adb = Adb(adb_executable)
    listed = adb.devices()
    ready = [s for s, state in listed if state == READY_STATE]
    if serial is not None:
        if serial not in ready:
            states = dict(listed)
            why = f"state {states[serial]}" if serial in states else "not attached"
            raise PipelineError(f"mobile.adb_serial: device {serial} is not ready ({why}); `adb devices` lists {listed or 'nothing'}")
        adb.serial = serial
        return adb
    if not ready:
        raise PipelineError(
            "mobile.device is adb but `adb devices` lists no device in state 'device' "
            f"(listed: {listed or 'none'}); attach a phone with USB debugging authorised, or set mobile.device: host"
        )
    if len(ready) > 1:
        raise PipelineError(f"mobile.adb_serial: several devices are attached ({', '.join(ready)}); choose one")
    adb.serial = ready[0]
    return adb
