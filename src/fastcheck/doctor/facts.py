"""What `fastcheck doctor` looks at: the host facts, read from a root directory.

Owns: the `Facts` record and `read_facts(root)`, which reads /proc/sys, /proc/self/status,
/proc/self/limits, /proc/net/ip_vs, /sys/module and /lib/modules below `root` (default
"/", a fake tree in tests); the hot-path implementations this process selected; and,
for the real root only, what the IPVS generic-netlink family answers.
Must not: judge anything (doctor/diagnose.py does), print, or change the host. Every
read tolerates a missing or unreadable file: the fact is then None ("unknown").
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fastcheck._ext._select import NO_EXTENSIONS_ENV, env_flag

SYSCTLS = (
    "net.ipv4.ping_group_range",
    "net.core.somaxconn",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_max_tw_buckets",
    "net.ipv4.tcp_tw_reuse",
    "fs.file-max",
    "fs.nr_open",
)


@dataclass(frozen=True, slots=True)
class IpvsNetlink:
    """What opening the IPVS generic-netlink family told us."""

    error: str | None = None  # why it could not be opened or asked; None when it answered
    version: str | None = None  # "1.2.1"
    connection_table_size: int = 0
    fullnat: bool = False


@dataclass(frozen=True, slots=True)
class Facts:
    """The host as doctor sees it; None means "could not be read"."""

    sysctl: Mapping[str, str] = field(default_factory=dict)  # dotted name → raw text
    cap_eff: int | None = None  # CapEff bits of this process
    gids: frozenset[int] = frozenset()  # effective gid and supplementary groups
    nofile: tuple[int | None, int | None] | None = None  # soft, hard; None = unlimited
    ipvs_proc: str | None = None  # first line of /proc/net/ip_vs
    ipvs_netlink: IpvsNetlink | None = None  # None: not asked (a root other than "/")
    kernel_release: str | None = None
    # "loaded" (/sys/module/ip_vs), "builtin", "module" (can be loaded), "absent" (not in
    # modules.dep), "no-modules" (no /lib/modules/<release>), or None (unknown)
    ip_vs_module: str | None = None
    implementations: Mapping[str, str] = field(default_factory=dict)  # module → c | py
    implementations_error: str | None = None
    no_extensions: bool = False  # FASTCHECK_NO_EXTENSIONS asked for pure Python


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except (OSError, ValueError):
        return None


def _status_fields(text: str | None) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in (text or "").splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip()] = value.strip()
    return fields


def _cap_eff(status: dict[str, str]) -> int | None:
    try:
        return int(status["CapEff"], 16)
    except (KeyError, ValueError):
        return None


def _gids(status: dict[str, str]) -> frozenset[int]:
    gids: set[int] = set()
    parts = status.get("Gid", "").split()
    words = parts[1:2] + status.get("Groups", "").split()  # effective gid, then groups
    for word in words:
        if word.isdigit():
            gids.add(int(word))
    return frozenset(gids)


def _limit(word: str) -> int | None:
    return None if word == "unlimited" else int(word)


def _nofile(limits: str | None) -> tuple[int | None, int | None] | None:
    for line in (limits or "").splitlines():
        if line.startswith("Max open files"):
            words = line[len("Max open files"):].split()
            try:
                return _limit(words[0]), _limit(words[1])
            except (IndexError, ValueError):
                return None
    return None


def _module_state(root: Path, release: str | None) -> str | None:
    if (root / "sys/module/ip_vs").is_dir():
        return "loaded"
    if not release:
        return None
    modules = root / "lib/modules" / release
    if not modules.is_dir():
        return "no-modules"
    if "/ip_vs.ko" in ("/" + (_read(modules / "modules.builtin") or "")):
        return "builtin"
    dep = _read(modules / "modules.dep")
    if dep is None:
        return None
    return "module" if "/ip_vs.ko" in dep else "absent"


def _netlink() -> IpvsNetlink:
    try:
        from fastcheck.ipvs.netlink import NetlinkBackend

        backend = NetlinkBackend()
        try:
            info = backend.info()
        finally:
            backend.close()
    except Exception as error:  # any failure is a fact to report
        return IpvsNetlink(error=str(error) or type(error).__name__)
    return IpvsNetlink(version=info.version, connection_table_size=info.connection_table_size,
                       fullnat=info.fullnat)


def _implementations() -> tuple[dict[str, str], str | None]:
    try:
        from fastcheck._ext._select import implementations

        return implementations(), None
    except Exception as error:  # FASTCHECK_REQUIRE_EXTENSIONS, a bad build
        return {}, f"{type(error).__name__}: {error}"


def read_facts(root: str | os.PathLike[str] = "/") -> Facts:
    """The facts below `root`; for the real root also what IPVS netlink answers."""
    base = Path(root)
    real = base.resolve() == Path("/")
    sysctl = {}
    for name in SYSCTLS:
        text = _read(base / "proc/sys" / name.replace(".", "/"))
        if text is not None:
            sysctl[name] = " ".join(text.split())
    status = _status_fields(_read(base / "proc/self/status"))
    header = _read(base / "proc/net/ip_vs")
    release = _read(base / "proc/sys/kernel/osrelease")
    release = release.strip() if release else None
    impl, impl_error = _implementations()
    return Facts(
        sysctl=sysctl, cap_eff=_cap_eff(status), gids=_gids(status),
        nofile=_nofile(_read(base / "proc/self/limits")),
        ipvs_proc=header.splitlines()[0].strip() if header else None,
        ipvs_netlink=_netlink() if real else None,
        kernel_release=release, ip_vs_module=_module_state(base, release),
        implementations=impl, implementations_error=impl_error,
        no_extensions=env_flag(NO_EXTENSIONS_ENV))
