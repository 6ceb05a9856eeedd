"""Boot artifacts for the test VM: which kernel, its uncompressed vmlinux, and the initramfs.

Owns: finding an installed Debian kernel that ships IPVS modules, extracting its vmlinux
from the bzImage once (direct PVH boot skips ~3 s of decompression per boot under TCG),
packing the tiny initramfs (static busybox, ``init.sh`` and the few modules that mount
the host root over virtio-9p), and caching both under ``$XDG_CACHE_HOME/fastcheck-vm``,
keyed by kernel version plus a fingerprint of every input so stale artifacts rebuild.
Must not: start qemu or know about commands run in the VM (``vm.py``), or raise
anything but ``PrereqError``/``ArtifactError`` for problems a user can fix.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

BUILDER_VERSION = "1"  # bump to invalidate every cached artifact
INIT_SCRIPT = Path(__file__).with_name("init.sh")
BOOT_DIR = Path("/boot")
MODULES_ROOT = Path("/lib/modules")
# Loaded in this order: PCI transport first, then 9p, overlay, and the console ports.
INITRAMFS_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_console")
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
MODPROBE_CANDIDATES = ("/usr/sbin/modprobe", "/sbin/modprobe")
IPVS_MODULE_DIR = "kernel/net/netfilter/ipvs"


class PrereqError(Exception):
    """Something to install (``package``, a Debian package) or grant before the VM can boot."""

    def __init__(self, message: str, package: str | None = None) -> None:
        super().__init__(message)
        self.package = package


class ArtifactError(Exception):
    """A build input is present but unusable (corrupt kernel image, odd modprobe output)."""


@dataclass(frozen=True, slots=True)
class Kernel:
    version: str
    image: Path  # the bzImage, /boot/vmlinuz-<version>
    modules: Path  # /lib/modules/<version>

    @property
    def config(self) -> Path:
        return self.image.parent / f"config-{self.version}"


@dataclass(frozen=True, slots=True)
class Artifacts:
    kernel: Kernel
    boot_image: Path  # extracted vmlinux (PVH) or, without PVH support, the bzImage itself
    initramfs: Path


# --- kernel discovery ----------------------------------------------------------------------


def _version_key(version: str) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-+~]", version)]


def has_ipvs(modules: Path) -> bool:
    return any((modules / IPVS_MODULE_DIR).glob("ip_vs.ko*"))


def installed_kernels(boot: Path = BOOT_DIR, modules_root: Path = MODULES_ROOT) -> list[Kernel]:
    """Kernels with both an image and a module tree, oldest first."""
    found = []
    for image in boot.glob("vmlinuz-*"):
        version = image.name.removeprefix("vmlinuz-")
        if (modules_root / version).is_dir():
            found.append(Kernel(version, image, modules_root / version))
    return sorted(found, key=lambda k: _version_key(k.version))


def find_kernel(version: str | None = None) -> Kernel:
    """The requested kernel, or the newest installed one that has IPVS modules."""
    kernels = installed_kernels()
    if version:
        for kernel in kernels:
            if kernel.version == version:
                return kernel
        have = ", ".join(k.version for k in kernels) or "none"
        raise PrereqError(f"kernel {version} is not installed (installed: {have})")
    with_ipvs = [k for k in kernels if has_ipvs(k.modules)]
    if not with_ipvs:
        raise PrereqError(
            "no installed kernel with IPVS modules under /boot and /lib/modules; "
            "install the Debian package linux-image-amd64",
            "linux-image-amd64",
        )
    return with_ipvs[-1]


def find_program(candidates: Sequence[str], name: str, package: str) -> Path:
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    found = shutil.which(name)
    if found:
        return Path(found)
    raise PrereqError(f"{name} not found; install the Debian package {package}", package)


def is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a PT_INTERP header (no dynamic loader needed)."""
    with path.open("rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only, like our guest
            return False
        (phoff,) = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != pt_interp for i in range(phnum))


def find_busybox() -> Path:
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.is_file() and is_static_elf(path.resolve()):
            return path.resolve()
    raise PrereqError(
        "no statically linked busybox; install the Debian package busybox-static",
        "busybox-static",
    )


# --- module load order ---------------------------------------------------------------------


def parse_show_depends(output: str) -> list[Path]:
    """Module files from ``modprobe --show-depends`` output, dependencies first.

    Lines are ``insmod /path/x.ko[.xz] [params]`` or ``builtin NAME`` (nothing to load).
    """
    files = []
    for line in output.splitlines():
        words = line.split()
        if not words or words[0] == "builtin":
            continue
        if words[0] != "insmod" or len(words) < 2:
            raise ArtifactError(f"unexpected modprobe --show-depends line: {line!r}")
        files.append(Path(words[1]))
    return files


def merge_load_order(per_module: Iterable[Iterable[Path]]) -> list[Path]:
    """Concatenate each module's dependency chain, keeping the first occurrence of a file.

    Each chain already lists dependencies before dependents, so the merged list is a
    valid insmod order as long as the chains are merged in the order given.
    """
    order: list[Path] = []
    seen: set[Path] = set()
    for chain in per_module:
        for path in chain:
            if path not in seen:
                seen.add(path)
                order.append(path)
    return order


def module_load_order(kernel: Kernel, names: Sequence[str] = INITRAMFS_MODULES) -> list[Path]:
    modprobe = find_program(MODPROBE_CANDIDATES, "modprobe", "kmod")
    chains = []
    for name in names:
        proc = subprocess.run(
            [str(modprobe), "-S", kernel.version, "--show-depends", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise PrereqError(
                f"kernel {kernel.version} has no module {name} "
                f"({proc.stderr.strip() or 'modprobe failed'}); reinstall linux-image-amd64",
                "linux-image-amd64",
            )
        chains.append(parse_show_depends(proc.stdout))
    return merge_load_order(chains)


def read_module(path: Path) -> bytes:
    """A module's ELF bytes, decompressing .ko.xz/.ko.gz so busybox insmod can load it."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        return _decompress_with("zstd", data, "zstd")
    return data


# --- vmlinux extraction --------------------------------------------------------------------


def _decompress_with(tool: str, data: bytes, package: str) -> bytes:
    exe = shutil.which(tool)
    if exe is None:
        raise PrereqError(f"{tool} is needed to unpack this kernel; install {package}", package)
    proc = subprocess.run([exe, "-dc"], input=data, capture_output=True, check=False)
    if not proc.stdout:
        raise ArtifactError(f"{tool} could not decompress: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def _xz(payload: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)


def _lzma(payload: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(payload)


def _gzip(payload: bytes) -> bytes:
    return zlib.decompressobj(wbits=31).decompress(payload)  # ignores trailing bytes


def _bzip2(payload: bytes) -> bytes:
    return bz2.BZ2Decompressor().decompress(payload)


PAYLOAD_FORMATS = (  # magic, decoder
    (b"\xfd7zXZ\x00", _xz),
    (b"\x1f\x8b\x08", _gzip),
    (b"BZh", _bzip2),
    (b"\x5d\x00\x00", _lzma),
    (b"\x28\xb5\x2f\xfd", lambda p: _decompress_with("zstd", p, "zstd")),
    (b"\x02\x21\x4c\x18", lambda p: _decompress_with("lz4", p, "lz4")),
    (b"\x89LZO", lambda p: _decompress_with("lzop", p, "lzop")),
)


def bzimage_payload(image: bytes) -> bytes:
    """The compressed vmlinux inside a bzImage (boot protocol >= 2.08 header fields)."""
    if len(image) < 0x250 or image[0x202:0x206] != b"HdrS":
        raise ArtifactError("not a bzImage (no HdrS boot header)")
    (version,) = struct.unpack_from("<H", image, 0x206)
    if version < 0x208:
        raise ArtifactError(f"boot protocol {version:#x} too old to locate the payload")
    setup_sects = image[0x1F1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sects + 1) * 512 + offset
    return image[start : start + length]


def extract_vmlinux(image: bytes) -> bytes:
    payload = bzimage_payload(image)
    for magic, decode in PAYLOAD_FORMATS:
        if payload.startswith(magic):
            vmlinux = decode(payload)
            break
    else:
        raise ArtifactError(f"unknown kernel compression (payload starts {payload[:6].hex()})")
    if vmlinux[:4] != b"\x7fELF":
        raise ArtifactError("decompressed kernel payload is not an ELF file")
    return vmlinux


def supports_pvh(kernel: Kernel) -> bool:
    """Whether qemu can boot the bare vmlinux (CONFIG_PVH); assume yes without a config."""
    try:
        return "CONFIG_PVH=y" in kernel.config.read_text().splitlines()
    except OSError:
        return True


# --- initramfs (cpio newc, written here so no cpio binary is needed) -----------------------


def _cpio_entry(ino: int, name: str, mode: int, data: bytes = b"", rdev: tuple = (0, 0)) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
    header = b"070701" + b"".join(b"%08x" % f for f in fields)
    head = header + encoded
    head += b"\0" * (-len(head) % 4)
    return head + data + b"\0" * (-len(data) % 4)


def build_cpio(entries: Sequence[tuple[str, int, bytes]]) -> bytes:
    """A newc archive of (name, mode, data); character devices carry (major, minor) data."""
    out = []
    for ino, (name, mode, data) in enumerate(entries, start=1):
        if stat.S_ISCHR(mode):
            major, minor = struct.unpack("<II", data)
            out.append(_cpio_entry(ino, name, mode, rdev=(major, minor)))
        else:
            out.append(_cpio_entry(ino, name, mode, data))
    out.append(_cpio_entry(0, "TRAILER!!!", 0))
    archive = b"".join(out)
    return archive + b"\0" * (-len(archive) % 512)


def initramfs_entries(busybox: Path, modules: Sequence[Path]) -> list[tuple[str, int, bytes]]:
    directory, executable, regular = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o755, stat.S_IFREG
    entries: list[tuple[str, int, bytes]] = [
        (d, directory, b"")
        for d in ("bin", "dev", "proc", "sys", "lower", "rw", "newroot", "modules", "run")
    ]
    entries.append(("dev/console", stat.S_IFCHR | 0o600, struct.pack("<II", 5, 1)))
    entries.append(("init", executable, INIT_SCRIPT.read_bytes()))
    entries.append(("bin/busybox", executable, busybox.read_bytes()))
    names = []
    for index, path in enumerate(modules):
        name = f"{index:02d}-{path.name.split('.ko')[0]}.ko"
        names.append(name)
        entries.append((f"modules/{name}", regular | 0o644, read_module(path)))
    entries.append(("modules/order", regular | 0o644, "".join(n + "\n" for n in names).encode()))
    return entries


# --- cache ---------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fastcheck-vm"


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def _write_atomic(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _readable(path: Path) -> None:
    if not os.access(path, os.R_OK):
        raise PrereqError(f"{path} is not readable by this user; run as root or make it readable")


def ensure_artifacts(
    kernel_version: str | None = None, cache_dir: Path | None = None, *, log=None
) -> Artifacts:
    """Return cached artifacts for the kernel, building whatever is missing or stale."""
    kernel = find_kernel(kernel_version)
    busybox = find_busybox()
    _readable(kernel.image)
    modules = module_load_order(kernel)
    pvh = supports_pvh(kernel)
    inputs = [BUILDER_VERSION, kernel.version, _stamp(kernel.image), _stamp(busybox)]
    inputs += [_stamp(m) for m in modules] + [INIT_SCRIPT.read_text()]
    fingerprint = hashlib.sha256("\n".join(inputs).encode()).hexdigest()[:12]
    root = (cache_dir or default_cache_dir()) / f"{kernel.version}-{fingerprint}"
    root.mkdir(parents=True, exist_ok=True)

    boot_image = kernel.image
    if pvh:
        boot_image = root / "vmlinux"
        if not boot_image.exists():
            if log:
                log(f"extracting vmlinux from {kernel.image}")
            _write_atomic(boot_image, extract_vmlinux(kernel.image.read_bytes()))
    initramfs = root / "initramfs.cpio"
    if not initramfs.exists():
        if log:
            log(f"building initramfs for {kernel.version} ({len(modules)} modules)")
        _write_atomic(initramfs, build_cpio(initramfs_entries(busybox, modules)))
    _prune_siblings(root)
    return Artifacts(kernel, boot_image, initramfs)


def _prune_siblings(keep: Path) -> None:
    """Drop artifacts of the same kernel built from older inputs."""
    prefix = keep.name.rsplit("-", 1)[0] + "-"
    for other in keep.parent.glob(prefix + "*"):
        suffix = other.name.removeprefix(prefix)
        if other != keep and re.fullmatch(r"[0-9a-f]{12}", suffix):
            shutil.rmtree(other, ignore_errors=True)
