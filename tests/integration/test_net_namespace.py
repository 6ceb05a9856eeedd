"""`net_namespace`: `fastcheck run` probes from inside a real network namespace.

A namespace made for the test (`ip netns add`, always deleted afterwards) has a TCP
listener on 127.0.0.1:IN (started with `ip netns exec`); the host has one on 127.0.0.1:OUT
and nothing on IN. With `net_namespace` the daemon — and each of its probe workers — sees
IN up and OUT down; without it, the reverse. A namespace that does not exist stops `run`
with a clear error, while `check-config` and `plan` do not need it. Needs root and iproute2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemonproc import DryRun, NamespaceListener, free_port, listener, network_namespace

from fastcheck.config.loader import load_text
from fastcheck.netns import NamespaceError, namespace_path


@pytest.fixture
def netns() -> Iterator[str]:
    with network_namespace("fcns") as name:
        yield name


@pytest.fixture
def inside(netns: str) -> Iterator[int]:
    """A listener on 127.0.0.1:PORT inside the namespace (nothing there on the host)."""
    port = free_port()
    listener = NamespaceListener(netns, port)
    try:
        listener.start()
        yield port
    finally:
        listener.stop()


@pytest.fixture
def outside() -> Iterator[int]:
    """A listener on 127.0.0.1:PORT on the host."""
    sock, port = listener()
    try:
        yield port
    finally:
        sock.close()


def write_config(path: Path, namespace: str | None, ports: list[int]) -> None:
    reals = "".join(f"    real_server 127.0.0.1 {port} {{\n        TCP_CHECK {{\n"
                    "            connect_timeout 1\n            retry 0\n        }\n    }\n"
                    for port in ports)
    head = f"net_namespace {namespace}\n" if namespace else ""
    path.write_text(f"{head}global_defs {{\n    router_id ns\n}}\n"
                    f"virtual_server 127.1.0.1 80 {{\n    delay_loop 0.3\n    lb_algo rr\n"
                    f"    lb_kind NAT\n    protocol TCP\n{reals}}}\n")


def wait_for_ports(daemon: DryRun, want: set[int]) -> None:
    deadline = time.monotonic() + 20
    daemon.wait_log("starting:", timeout=20)  # signal handlers are in place
    daemon.wait_dump(lambda doc: ports(doc) == want, f"became {want}",
                     timeout=deadline - time.monotonic(), show=ports)


def ports(doc: dict[str, Any]) -> set[int]:
    return {d["port"] for s in doc["ipvs"] for d in s["destinations"]}


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        text = Path(f"/proc/{pid}/task/{task}/children").read_text()
        found += [int(word) for word in text.split()]
    return found


@pytest.mark.parametrize("workers", ["1", "2"])
def test_probes_run_inside_the_namespace(tmp_path: Path, netns: str, inside: int,
                                         outside: int, workers: str) -> None:
    config = tmp_path / "fc.conf"
    write_config(config, netns, [inside, outside])
    daemon = DryRun(tmp_path, config, "--workers", workers)
    try:
        wait_for_ports(daemon, {inside})
        namespace = os.stat(namespace_path(netns))
        for pid in [daemon.proc.pid, *children(daemon.proc.pid)]:
            mine = os.stat(f"/proc/{pid}/ns/net")
            assert (mine.st_dev, mine.st_ino) == (namespace.st_dev, namespace.st_ino), pid
        if workers == "2":
            assert len(children(daemon.proc.pid)) == 2
        assert daemon.stop() == 0
    finally:
        daemon.stop()
    text = (tmp_path / "fc.log").read_text()
    assert f"running in network namespace {netns}" in text


def test_without_net_namespace_the_host_is_probed(tmp_path: Path, netns: str, inside: int,
                                                  outside: int) -> None:
    config = tmp_path / "fc.conf"
    write_config(config, None, [inside, outside])
    daemon = DryRun(tmp_path, config)
    try:
        wait_for_ports(daemon, {outside})
        assert daemon.stop() == 0
    finally:
        daemon.stop()


def test_a_missing_namespace_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "fc.conf"
    name = f"fcnone{os.getpid()}"
    write_config(config, name, [free_port()])
    assert DryRun(tmp_path, config).proc.wait(timeout=30) == 1
    text = (tmp_path / "fc.log").read_text()
    assert f"net_namespace '{name}' does not exist" in text
    assert f"ip netns add {name}" in text and "Traceback" not in text
    assert not (tmp_path / "fc.pid").exists()
    for command in (["check-config", "-f", str(config)], ["plan", "-f", str(config)]):
        done = subprocess.run([sys.executable, "-m", "fastcheck.cli", *command],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr


def test_namespace_path_rejects_odd_names_and_finds_real_ones(tmp_path: Path) -> None:
    for bad in ("", "a/b", ".", ".."):
        with pytest.raises(NamespaceError, match="is not a namespace name"):
            namespace_path(bad, (str(tmp_path),))
    (tmp_path / "blue").write_text("")
    assert namespace_path("blue", (str(tmp_path / "none"), str(tmp_path))) == \
        str(tmp_path / "blue")
    with pytest.raises(NamespaceError, match="ip netns add red"):
        namespace_path("red", (str(tmp_path),))


def test_loader_reads_net_namespace_as_keepalived() -> None:
    config, diags = load_text("net_namespace blue\nnet_namespace red\nvirtual_server "
                              "127.1.0.1 80 {\n    protocol TCP\n}\n")
    assert config.global_defs.net_namespace == "blue"
    assert any("Duplicate net_namespace definition red - ignoring" in str(d)
               for d in diags.warnings)
    config, diags = load_text("net_namespace\n")
    assert config.global_defs.net_namespace is None
    assert any("net_namespace name missing" in str(d) for d in diags.warnings)
