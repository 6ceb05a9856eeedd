"""Host side of the kernel test plugin: stand-in items that report what the VM's pytest did.

Owns: ``GuestItem`` (replaces each host item marked ``kernel``; same node id, markers and
location), ``GuestRun`` (boots ONE VM, lazily, the first time a stand-in runs, running
``python -m pytest <node ids> --junitxml=...`` for every stand-in still in the session),
and reading the guest's junit xml back into per-test outcomes.
Must not: run kernel tests on the host, or define hooks/fixtures (``tests/kernel/conftest.py``
does); booting is ``vm.py``'s business.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import vm
import vmimage

NODEID_PROPERTY = "fastcheck_nodeid"  # the guest records each item's node id under this
REQUIRE_VM_ENV = "FASTCHECK_REQUIRE_VM"  # "1": missing VM prerequisites fail, not skip
TIMEOUT_ENV, MEM_ENV, KERNEL_ENV = "FASTCHECK_VM_TIMEOUT", "FASTCHECK_VM_MEM", "FASTCHECK_VM_KERNEL"
DEFAULT_TIMEOUT_S = 1800.0
LOG_TAIL_LINES = 60
_RANK = {"passed": 0, "xfailed": 1, "skipped": 2, "failed": 3}


@dataclass(frozen=True, slots=True)
class GuestOutcome:
    outcome: str  # passed | failed | skipped | xfailed
    text: str = ""


def junit_key(nodeid: str) -> tuple[str, str]:
    """(classname, name) as pytest's junitxml writes them for this node id (xunit2)."""
    base, bracket, params = nodeid.partition("[")
    names = base.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return ".".join(names[:-1]), names[-1]


def _outcome_of(case: ET.Element) -> GuestOutcome:
    problems = [c for c in case if c.tag in ("failure", "error")]
    if problems:
        texts = []
        for p in problems:
            kind = "error" if p.tag == "error" else "failure"
            texts.append(f"[guest {kind}] {p.get('message', '')}\n{p.text or ''}".rstrip())
        for stream in ("system-out", "system-err"):
            for captured in case.iter(stream):
                if (captured.text or "").strip():
                    texts.append(f"----- guest {stream} -----\n{captured.text.rstrip()}")
        return GuestOutcome("failed", "\n\n".join(texts))
    for child in case:
        if child.tag == "skipped":
            kind = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
            return GuestOutcome(kind, child.get("message") or (child.text or "").strip())
    return GuestOutcome("passed")


def parse_junit(path: Path) -> dict[str, GuestOutcome]:
    """Outcomes keyed by node id (recorded property) and by ``classname::name`` fallback."""
    outcomes: dict[str, GuestOutcome] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        result = _outcome_of(case)
        keys = [f"{case.get('classname', '')}::{case.get('name', '')}"]
        keys += [
            p.get("value", "") for p in case.iter("property") if p.get("name") == NODEID_PROPERTY
        ]
        for key in keys:
            old = outcomes.get(key)
            if old is None or _RANK[result.outcome] > _RANK[old.outcome]:
                outcomes[key] = result
    return outcomes


def lookup(outcomes: dict[str, GuestOutcome], nodeid: str) -> GuestOutcome | None:
    found = outcomes.get(nodeid)
    if found is None:
        classname, name = junit_key(nodeid)
        found = outcomes.get(f"{classname}::{name}")
    return found


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no guest output captured)"


class GuestFailure(Exception):
    """A kernel test failed in the VM; ``str()`` is the guest's report."""


class GuestRun:
    """The one VM run per host session; created by the conftest, started on first use."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.kernel_version = os.environ.get(KERNEL_ENV) or None
        self.problems: list[vmimage.PrereqError] = []
        self.started = False
        self.broken = ""  # why no per-test results exist, when the run itself failed
        self.outcomes: dict[str, GuestOutcome] = {}
        self.workdir: Path | None = None
        self.log: Path | None = None
        self.duration_s = 0.0
        self.count = 0
        self.streamed = False

    # -- prerequisites --------------------------------------------------------------------

    def check(self) -> list[str]:
        self.problems = vm.missing_prerequisites(self.kernel_version)
        if shutil.which("ipvsadm") is None:
            self.problems.append(
                vmimage.PrereqError(
                    "ipvsadm not found; install the Debian package ipvsadm", "ipvsadm"
                )
            )
        return self.problems

    def skip_reason(self) -> str:
        return f"kernel tests need the qemu VM rig: {vm.prerequisites_error(self.problems)}"

    # -- the run ----------------------------------------------------------------------------

    def result(self, item: GuestItem) -> GuestOutcome:
        if self.problems:  # only reached with FASTCHECK_REQUIRE_VM=1 (else skipped)
            return GuestOutcome("failed", f"{self.skip_reason()} [{REQUIRE_VM_ENV}=1]")
        if not self.started:
            self.started = True
            self._run([i for i in item.session.items if isinstance(i, GuestItem)])
        if self.broken:
            return GuestOutcome("failed", self.broken)
        found = lookup(self.outcomes, item.nodeid)
        if found is None:
            return GuestOutcome(
                "failed",
                f"the guest's junit xml has no result for {item.nodeid}; "
                f"guest output (tail):\n{self._log_tail()}",
            )
        return found

    def _guest_argv(self, nodeids: Sequence[str], junit: Path) -> list[str]:
        opt = self.config.option
        argv = [sys.executable, "-m", "pytest", "-v", f"--rootdir={self.config.rootpath}"]
        if self.config.inipath:
            argv.append(f"--config-file={self.config.inipath}")
        argv += [f"--junitxml={junit}", "-o", "junit_family=xunit2"]
        argv += ["-o", "junit_logging=all", "-p", "no:cacheprovider"]
        if not self._mentions("--hypothesis"):
            # Importing hypothesis' pytest plugin costs ~6 s under emulation; @given tests
            # still work without it (only its --hypothesis-* options need it).
            argv += ["-p", "no:hypothesispytest"]
        if getattr(opt, "tbstyle", "auto") != "auto":
            argv.append(f"--tb={opt.tbstyle}")
        if getattr(opt, "importmode", "prepend") != "prepend":
            argv.append(f"--import-mode={opt.importmode}")
        if getattr(opt, "maxfail", 0):
            argv.append(f"--maxfail={opt.maxfail}")
        return [*argv, "--", *nodeids]

    def _mentions(self, text: str) -> bool:
        args = [*self.config.invocation_params.args, *self.config.getini("addopts")]
        return any(text in str(a) for a in args)

    def _run(self, items: Iterable[GuestItem]) -> None:
        nodeids = [i.nodeid for i in items]
        self.count = len(nodeids)
        self.workdir = Path(tempfile.mkdtemp(prefix="fastcheck-kernel-"))
        self.log = self.workdir / "guest.log"
        junit = self.workdir / "kernel.xml"
        self.streamed = self.config.getoption("capture") == "no"
        spec = vm.VmSpec(
            argv=self._guest_argv(nodeids, junit),
            cwd=self.config.rootpath,
            env=dict(os.environ),
            shares=[self.workdir],
            timeout_s=float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S),
            mem_mb=int(os.environ.get(MEM_ENV) or 1024),
        )
        started = time.monotonic()
        with self.log.open("ab") as log:
            fds = (1, 2) if self.streamed else (log.fileno(), log.fileno())

            def say(msg: str) -> None:
                os.write(fds[1], f"run-in-vm: {msg}\n".encode())

            try:
                status = vm.run_in_vm(
                    spec,
                    stdout_fd=fds[0],
                    stderr_fd=fds[1],
                    kernel_version=self.kernel_version,
                    log=say,
                )
            except (vmimage.PrereqError, vmimage.ArtifactError) as exc:
                status = vm.EXIT_VM_FAILED
                say(f"error: {exc}")
        self.duration_s = time.monotonic() - started
        if status == vm.EXIT_INTERRUPTED:
            raise KeyboardInterrupt
        if junit.exists():
            self.outcomes = parse_junit(junit)
        if not self.outcomes or status in (vm.EXIT_TIMEOUT, vm.EXIT_VM_FAILED):
            why = {
                vm.EXIT_TIMEOUT: f"the VM timed out ({TIMEOUT_ENV}={spec.timeout_s:g} s)",
                vm.EXIT_VM_FAILED: "the VM could not run pytest",
            }.get(status, f"the guest's pytest exited {status} without a junit report")
            if not self.outcomes:
                self.broken = f"{why}; guest output (tail):\n{self._log_tail()}"

    def _log_tail(self) -> str:
        if self.streamed or self.log is None:
            return "(guest output was streamed above: -s)"
        return _tail(self.log)

    # -- session end ------------------------------------------------------------------------

    def any_failed(self) -> bool:
        return bool(self.broken) or any(o.outcome == "failed" for o in self.outcomes.values())

    def summary(self, reporter: pytest.TerminalReporter) -> None:
        if not self.started:
            return
        reporter.write_sep(
            "-", f"kernel tests: {self.count} sent to one qemu VM, in {self.duration_s:.1f} s"
        )
        if self.any_failed() and self.log and not self.streamed:
            reporter.write_sep("=", "guest pytest output (qemu VM)")
            reporter.write(self.log.read_text(errors="replace"))
            reporter.write_line(f"(kept in {self.workdir})")

    def cleanup(self) -> None:
        if self.workdir and not self.any_failed():
            shutil.rmtree(self.workdir, ignore_errors=True)


class GuestItem(pytest.Item):
    """Stands in for a ``kernel`` test on the host; its outcome is the guest's."""

    def __init__(self, *, run: GuestRun, info: tuple, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.run = run
        self._info = info

    @classmethod
    def replacing(cls, item: pytest.Item, run: GuestRun) -> GuestItem:
        guest = cls.from_parent(item.parent, name=item.name, run=run, info=item.reportinfo())
        guest.own_markers.extend(item.own_markers)
        guest.keywords.update(item.keywords)
        guest.extra_keyword_matches.update(item.extra_keyword_matches)
        return guest

    def reportinfo(self) -> tuple:
        return self._info

    def runtest(self) -> None:
        result = self.run.result(self)
        if result.outcome == "skipped":
            raise pytest.skip.Exception(f"[in VM] {result.text}", _use_item_location=True)
        if result.outcome == "xfailed":
            pytest.xfail(f"[in VM] {result.text}")
        if result.outcome == "failed":
            raise GuestFailure(result.text)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, GuestFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)
