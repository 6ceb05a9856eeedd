"""Kernel tests: every test marked ``kernel`` runs inside ONE throw-away qemu VM.

The selection rule is the marker, not the directory: kernel tests live here (the fixtures
below are only visible here) and carry ``pytest.mark.kernel``; unmarked tests in this
directory run on the host as usual (unit tests of the rig, pure encoders...).

On the host (no ``FASTCHECK_IN_VM``) each ``kernel`` item is swapped for a stand-in
(``tools/vm/guestrun.py``). The first stand-in to run boots one VM (``tools/vm/vm.py``)
running ``python -m pytest <every selected kernel node id> --junitxml=...`` with the
host's root, venv and cwd; each stand-in then passes, fails with the guest's report, or
skips with the guest's reason. On failure the guest's whole pytest output is printed in
the terminal summary (``-s`` streams it live instead). Missing qemu/kernel/busybox/
ipvsadm skips the kernel tests with the ``apt-get install`` line to run, or fails them
when ``FASTCHECK_REQUIRE_VM=1`` (set it in CI). Knobs: ``FASTCHECK_VM_TIMEOUT`` (s,
default 1800), ``FASTCHECK_VM_MEM`` (MB, default 1024), ``FASTCHECK_VM_KERNEL`` (version).

In the guest (``FASTCHECK_IN_VM=1``) tests run for real, with the fixtures below.
Python is slow under emulation: poll with ``wait_until`` rather than sleeping, and
expect seconds where the host takes milliseconds.
Must not: touch the IPVS table of a machine that is not the VM: the kernel fixtures
refuse to run outside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "vm"))
import guestrun
import vm

IN_VM = os.environ.get(vm.IN_VM_ENV) == "1"
MARKER = "kernel"
IPVS_SCHEDULERS = (
    "rr",
    "wrr",
    "lc",
    "wlc",
    "lblc",
    "lblcr",
    "dh",
    "sh",
    "mh",
    "sed",
    "nq",
    "fo",
    "ovf",
    "twos",
)
IPVS_EXTRA_MODULES = ("ip_vs_pe_sip",)
_RUN = pytest.StashKey[guestrun.GuestRun]()
T = TypeVar("T")


# --- hooks -------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}: runs inside a throw-away qemu VM with IPVS (tests/kernel)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IN_VM:
        return
    indexes = [i for i, item in enumerate(items) if item.get_closest_marker(MARKER)]
    if not indexes:
        return
    run = config.stash.setdefault(_RUN, guestrun.GuestRun(config))
    problems = run.check()
    for i in indexes:
        guest = guestrun.GuestItem.replacing(items[i], run)
        if problems and os.environ.get(guestrun.REQUIRE_VM_ENV) != "1":
            guest.add_marker(pytest.mark.skip(reason=run.skip_reason()))
        items[i] = guest


def pytest_report_header(config: pytest.Config) -> str | None:
    return f"kernel tests: inside the qemu VM, Linux {os.uname().release}" if IN_VM else None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if IN_VM:  # lets the host match junit testcases to node ids exactly
        item.user_properties.append((guestrun.NODEID_PROPERTY, item.nodeid))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    run = terminalreporter.config.stash.get(_RUN, None)
    if run is not None:
        run.summary(terminalreporter)


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.stash.get(_RUN, None)
    if run is not None:
        run.cleanup()


# --- guest fixtures ------------------------------------------------------------------------


def _require_vm(what: str) -> None:
    if not IN_VM:
        pytest.fail(
            f"{what} changes the kernel's IPVS table and only runs inside the test VM; "
            f"mark the test `{MARKER}` (FASTCHECK_IN_VM is not set here)",
            pytrace=False,
        )


def _shipped_modules() -> set[str]:
    """Names of the modules this kernel ships (from modules.dep; no modprobe per name)."""
    dep = Path("/lib/modules", os.uname().release, "modules.dep")
    names = set()
    for line in dep.read_text().splitlines():
        path = line.split(":", 1)[0]
        names.add(path.rsplit("/", 1)[-1].split(".ko", 1)[0].replace("-", "_"))
    return names


def _load_modules(names: list[str]) -> None:
    """One ``modprobe -a`` (each modprobe costs ~0.1 s under emulation); fail if any is absent."""
    proc = subprocess.run(["modprobe", "-a", *names], capture_output=True, text=True, check=False)
    missing = [n for n in names if not Path("/sys/module", n).is_dir()]
    if proc.returncode != 0 or missing:
        pytest.fail(
            f"modprobe -a {' '.join(names)} failed ({missing} not loaded): {proc.stderr.strip()}",
            pytrace=False,
        )


class Ipvsadm:
    """Runs the ipvsadm binary (the reference view of the table) and returns its stdout."""

    def __call__(self, *args: str) -> str:
        proc = subprocess.run(["ipvsadm", *args], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise AssertionError(
                f"ipvsadm {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc.stdout

    def list(self) -> str:
        """``ipvsadm -Ln``: the whole table, numeric."""
        return self("-Ln")

    def clear(self) -> None:
        self("-C")


@pytest.fixture(scope="session")
def ipvs_kernel() -> str:
    """Load ip_vs, every scheduler module the kernel ships and ip_vs_pe_sip; the version."""
    _require_vm("ipvs_kernel")
    shipped = _shipped_modules()
    if "ip_vs" not in shipped:
        pytest.fail(f"kernel {os.uname().release} has no ip_vs module", pytrace=False)
    wanted = ["ip_vs", *(f"ip_vs_{s}" for s in IPVS_SCHEDULERS), *IPVS_EXTRA_MODULES]
    _load_modules([name for name in wanted if name in shipped])
    return os.uname().release


@pytest.fixture(scope="session")
def ipvs_schedulers(ipvs_kernel: str) -> tuple[str, ...]:
    """Scheduler names (``rr``, ``wrr``...) whose modules are loaded in this kernel."""
    return tuple(s for s in IPVS_SCHEDULERS if Path("/sys/module", f"ip_vs_{s}").is_dir())


@pytest.fixture(scope="session")
def ipvsadm(ipvs_kernel: str) -> Ipvsadm:
    """``ipvsadm("-A", "-t", ...)`` runs ipvsadm; ``ipvsadm.list()`` is ``ipvsadm -Ln``."""
    return Ipvsadm()


@pytest.fixture
def clean_ipvs(ipvsadm: Ipvsadm) -> Iterator[Ipvsadm]:
    """An empty IPVS table for the test (``ipvsadm -C`` before and after); the helper."""
    _require_vm("clean_ipvs")
    ipvsadm.clear()
    yield ipvsadm
    ipvsadm.clear()


def _wait_until(
    predicate: Callable[[], T], timeout_s: float = 30.0, interval_s: float = 0.05, what: str = ""
) -> T:
    """Poll until ``predicate()`` is truthy and return it; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what or predicate}")
        time.sleep(interval_s)


@pytest.fixture
def wait_until() -> Callable[..., object]:
    """``wait_until(predicate, timeout_s=30, interval_s=0.05, what="...")``: poll, don't sleep."""
    return _wait_until
