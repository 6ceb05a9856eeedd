"""Host-side unit tests of the VM rig's pure parts (unmarked: no VM is booted).

Module load order, the cpio writer, bzImage payload extraction, the guest's cmd.sh and
mapping the guest's junit xml back to node ids.
"""

from __future__ import annotations

import gzip
import lzma
import os
import stat
import struct
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import guestrun
import pytest
import vm
import vmimage

KVER = "6.1.0-56-amd64"
M = f"/lib/modules/{KVER}/kernel"
# `modprobe -S KVER --show-depends NAME` for each INITRAMFS_MODULES name, as Debian prints it.
SHOW_DEPENDS = {
    "virtio_pci": f"""insmod {M}/drivers/virtio/virtio_ring.ko
insmod {M}/drivers/virtio/virtio.ko
insmod {M}/drivers/virtio/virtio_pci_modern_dev.ko
insmod {M}/drivers/virtio/virtio_pci_legacy_dev.ko
insmod {M}/drivers/virtio/virtio_pci.ko
""",
    "9pnet_virtio": f"""insmod {M}/drivers/virtio/virtio_ring.ko
insmod {M}/drivers/virtio/virtio.ko
insmod {M}/net/9p/9pnet.ko
insmod {M}/net/9p/9pnet_virtio.ko
""",
    "9p": f"""insmod {M}/fs/netfs/netfs.ko
insmod {M}/fs/fscache/fscache.ko
insmod {M}/net/9p/9pnet.ko
insmod {M}/fs/9p/9p.ko
""",
    "overlay": "builtin overlay\n",
    "virtio_console": f"""insmod {M}/drivers/virtio/virtio_ring.ko
insmod {M}/drivers/virtio/virtio.ko
insmod {M}/drivers/char/virtio_console.ko opt=1
""",
}


def names(paths: list[Path]) -> list[str]:
    return [p.name.split(".ko")[0] for p in paths]


# --- module load order ---------------------------------------------------------------------


def test_show_depends_lists_files_in_order_and_skips_builtins() -> None:
    assert names(vmimage.parse_show_depends(SHOW_DEPENDS["virtio_console"])) == [
        "virtio_ring",
        "virtio",
        "virtio_console",
    ]
    assert vmimage.parse_show_depends(SHOW_DEPENDS["overlay"]) == []
    assert vmimage.parse_show_depends("") == []


def test_unexpected_show_depends_output_is_an_error() -> None:
    with pytest.raises(vmimage.ArtifactError, match="unexpected"):
        vmimage.parse_show_depends("FATAL: Module nosuch not found\n")


def test_merged_order_keeps_first_occurrence_and_dependencies_first() -> None:
    chains = [vmimage.parse_show_depends(SHOW_DEPENDS[n]) for n in vmimage.INITRAMFS_MODULES]
    order = names(vmimage.merge_load_order(chains))
    assert order == [
        "virtio_ring",
        "virtio",
        "virtio_pci_modern_dev",
        "virtio_pci_legacy_dev",
        "virtio_pci",
        "9pnet",
        "9pnet_virtio",
        "netfs",
        "fscache",
        "9p",
        "virtio_console",
    ]
    for chain in map(names, chains):  # each requested module after everything it needs
        assert all(order.index(dep) < order.index(chain[-1]) for dep in chain[:-1])


def _modules_dep(kernel: vmimage.Kernel) -> dict[str, list[str]]:
    deps = {}
    for line in (kernel.modules / "modules.dep").read_text().splitlines():
        module, _, needs = line.partition(":")
        deps[module.rsplit("/", 1)[-1]] = [n.rsplit("/", 1)[-1] for n in needs.split()]
    return deps


def test_installed_kernel_order_loads_every_dependency_first() -> None:
    try:
        kernel = vmimage.find_kernel()
        order = vmimage.module_load_order(kernel)
    except vmimage.PrereqError as exc:
        pytest.skip(f"no usable kernel here: {exc}")
    files = [p.name for p in order]
    deps = _modules_dep(kernel)
    for i, name in enumerate(files):
        for needed in deps[name]:
            assert needed in files[:i], f"{name} needs {needed} loaded before it"
    wanted = {n.replace("_", "-") for n in vmimage.INITRAMFS_MODULES}
    loaded = {f.split(".ko")[0].replace("_", "-") for f in files}
    builtin = (kernel.modules / "modules.builtin").read_text()
    assert all(w in loaded or f"/{w}.ko" in builtin.replace("_", "-") for w in wanted)


# --- cpio ----------------------------------------------------------------------------------


def read_newc(archive: bytes) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    entries, pos = [], 0
    while True:
        assert archive[pos : pos + 6] == b"070701"
        fields = [int(archive[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rdev, namesize = fields[1], fields[6], (fields[9], fields[10]), fields[11]
        name_end = pos + 110 + namesize
        name = archive[pos + 110 : name_end - 1].decode()
        data_start = name_end + (-name_end % 4)
        data = archive[data_start : data_start + size]
        pos = data_start + size + (-(data_start + size) % 4)
        if name == "TRAILER!!!":
            assert len(archive) % 512 == 0
            return entries
        entries.append((name, mode, data, rdev))


def test_cpio_round_trips_files_dirs_and_device_nodes() -> None:
    archive = vmimage.build_cpio(
        [
            ("bin", stat.S_IFDIR | 0o755, b""),
            ("dev/console", stat.S_IFCHR | 0o600, struct.pack("<II", 5, 1)),
            ("init", stat.S_IFREG | 0o755, b"#!/bin/sh\n"),
            ("odd", stat.S_IFREG | 0o644, b"xyz"),
        ]
    )
    entries = read_newc(archive)
    assert [(n, stat.S_IFMT(m)) for n, m, _, _ in entries] == [
        ("bin", stat.S_IFDIR),
        ("dev/console", stat.S_IFCHR),
        ("init", stat.S_IFREG),
        ("odd", stat.S_IFREG),
    ]
    assert entries[1][3] == (5, 1) and entries[1][2] == b""
    assert entries[2][2] == b"#!/bin/sh\n" and entries[3][2] == b"xyz"


def test_initramfs_lists_modules_in_load_order(tmp_path: Path) -> None:
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF fake")
    first, second = tmp_path / "virtio_ring.ko", tmp_path / "virtio.ko.xz"
    first.write_bytes(b"ring")
    second.write_bytes(lzma.compress(b"virtio", format=lzma.FORMAT_XZ))
    entries = {n: d for n, _, d in vmimage.initramfs_entries(busybox, [first, second])}
    assert entries["modules/order"] == b"00-virtio_ring.ko\n01-virtio.ko\n"
    assert entries["modules/01-virtio.ko"] == b"virtio"  # decompressed for busybox insmod
    assert entries["init"].startswith(b"#!/bin/busybox sh")


# --- vmlinux -------------------------------------------------------------------------------


def fake_bzimage(payload: bytes, setup_sects: int = 2, offset: int = 0x40) -> bytes:
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x20F)
    struct.pack_into("<II", setup, 0x248, offset, len(payload))
    return bytes(setup) + b"\0" * offset + payload + struct.pack("<I", 1234)


@pytest.mark.parametrize(
    "compress",
    [lambda d: lzma.compress(d, format=lzma.FORMAT_XZ), gzip.compress],
    ids=["xz", "gzip"],
)
def test_vmlinux_is_found_after_the_setup_sectors(compress) -> None:
    elf = b"\x7fELF" + bytes(range(256)) * 64
    assert vmimage.extract_vmlinux(fake_bzimage(compress(elf) + b"size")) == elf


def test_unknown_compression_and_non_bzimages_are_clear_errors() -> None:
    with pytest.raises(vmimage.ArtifactError, match="unknown kernel compression"):
        vmimage.extract_vmlinux(fake_bzimage(b"\x01\x02\x03\x04\x05\x06"))
    with pytest.raises(vmimage.ArtifactError, match="not a bzImage"):
        vmimage.extract_vmlinux(b"\x7fELF" + b"\0" * 4096)


def test_busybox_staticness_is_read_from_the_elf_headers() -> None:
    assert not vmimage.is_static_elf(Path(os.path.realpath(sys.executable)))
    busybox = Path("/bin/busybox")
    if busybox.exists():
        assert vmimage.is_static_elf(busybox.resolve()) == ("static" in _file_type(busybox))


def _file_type(path: Path) -> str:
    try:
        return subprocess.run(["file", "-L", str(path)], capture_output=True, text=True).stdout
    except OSError:
        pytest.skip("no file(1)")


# --- the guest's command script ------------------------------------------------------------


def test_guest_script_reproduces_cwd_env_and_argv(tmp_path: Path) -> None:
    workdir = tmp_path / "dir with 'quotes' and $dollar"
    workdir.mkdir()
    env = {"PATH": os.environ["PATH"], "ODD": "a'b\"c $HOME\nline2", "PWD": "/nope", "1BAD": "x"}
    argv = [sys.executable, "-c", "import os,sys; print(repr((os.getcwd(), sys.argv[1:], "
            "os.environ.get('ODD'), os.environ.get('FASTCHECK_IN_VM'), 'PWD' in os.environ)))",
            "two words", "*"]  # fmt: skip
    script = tmp_path / "cmd.sh"
    script.write_text(vm.guest_script(argv, workdir, env))
    out = subprocess.run(["env", "-i", "/bin/sh", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert eval(out.stdout) == (str(workdir), ["two words", "*"], env["ODD"], "1", True)


def test_guest_script_exits_125_when_the_cwd_is_missing(tmp_path: Path) -> None:
    script = tmp_path / "cmd.sh"
    script.write_text(vm.guest_script(["true"], tmp_path / "gone", {}))
    assert subprocess.run(["/bin/sh", str(script)], capture_output=True).returncode == 125


def test_qemu_never_gets_kvm_or_a_network_device(tmp_path: Path) -> None:
    spec = vm.VmSpec(argv=["true"], cwd=tmp_path, env={}, shares=[tmp_path / "a,b"])
    kernel = vmimage.Kernel(KVER, tmp_path / "vmlinuz", tmp_path)
    artifacts = vmimage.Artifacts(kernel, tmp_path / "vmlinux", tmp_path / "initramfs")
    cmd = vm.qemu_command(spec, artifacts, tmp_path, "/proc/self/fd/4", "/proc/self/fd/6", "null")
    assert [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-accel"] == ["tcg"]
    assert "-enable-kvm" not in cmd and "kvm" not in cmd[cmd.index("-machine") + 1]
    assert cmd[cmd.index("-nic") + 1] == "none" and "-netdev" not in cmd
    assert f"path={tmp_path}/a,,b,mount_tag=share0" in " ".join(cmd)


# --- junit xml back to node ids ------------------------------------------------------------


SAMPLE_TESTS = '''
import pytest

def test_passes():
    pass

def test_fails():
    print("to stdout")
    assert 1 == 2

@pytest.mark.parametrize("x", ["a b", "c[d]", "e::f", "g.py"])
def test_param(x):
    pass

def test_skips():
    pytest.skip("no such scheduler")

@pytest.mark.xfail(reason="kernel bug")
def test_xfails():
    assert 0

@pytest.fixture
def broken():
    raise RuntimeError("setup exploded")

def test_setup_error(broken):
    pass

class TestGroup:
    def test_in_class(self):
        pass
'''


@pytest.fixture(scope="module")
def sample_junit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("junit")
    (root / "pkg").mkdir()
    (root / "pkg" / "test_sample.py").write_text(textwrap.dedent(SAMPLE_TESTS))
    (root / "conftest.py").write_text(
        "def pytest_runtest_setup(item):\n"
        f"    item.user_properties.append(({guestrun.NODEID_PROPERTY!r}, item.nodeid))\n"
    )
    xml = root / "out.xml"
    ids = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "-p", "no:hypothesispytest", f"--rootdir={root}", "-c", os.devnull, "pkg"],
        cwd=root, capture_output=True, text=True,
    ).stdout  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
         f"--rootdir={root}", "-c", os.devnull, f"--junitxml={xml}", "-o", "junit_logging=all",
         "pkg"],
        cwd=root, capture_output=True, check=False,
    )  # fmt: skip
    nodeids = [line for line in ids.splitlines() if "::" in line]
    assert len(nodeids) == 10
    return xml, nodeids


EXPECTED = {
    "test_passes": "passed",
    "test_fails": "failed",
    "test_skips": "skipped",
    "test_xfails": "xfailed",
    "test_setup_error": "failed",
    "test_in_class": "passed",
    "test_param": "passed",
}


def _check(outcomes: dict[str, guestrun.GuestOutcome], nodeids: list[str]) -> None:
    for nodeid in nodeids:
        found = guestrun.lookup(outcomes, nodeid)
        assert found is not None, nodeid
        assert found.outcome == EXPECTED[nodeid.split("[")[0].split("::")[-1]], nodeid


def test_junit_outcomes_map_to_node_ids(sample_junit: tuple[Path, list[str]]) -> None:
    xml, nodeids = sample_junit
    outcomes = guestrun.parse_junit(xml)
    _check(outcomes, nodeids)
    failed = guestrun.lookup(outcomes, "pkg/test_sample.py::test_fails")
    assert failed is not None and "assert 1 == 2" in failed.text and "to stdout" in failed.text
    error = guestrun.lookup(outcomes, "pkg/test_sample.py::test_setup_error")
    assert error is not None and "setup exploded" in error.text and "[guest error]" in error.text
    skipped = guestrun.lookup(outcomes, "pkg/test_sample.py::test_skips")
    assert skipped is not None and skipped.text == "no such scheduler"


def test_junit_without_node_id_properties_falls_back_to_names(
    sample_junit: tuple[Path, list[str]], tmp_path: Path
) -> None:
    xml, nodeids = sample_junit
    tree = ET.parse(xml)
    for case in tree.getroot().iter("testcase"):
        for props in case.findall("properties"):
            case.remove(props)
    bare = tmp_path / "bare.xml"
    tree.write(bare)
    _check(guestrun.parse_junit(bare), nodeids)
