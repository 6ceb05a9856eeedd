"""The whole probe engine: config → probe plan → scheduler → runner → results.

Real servers on loopback (a TCP listener, an HTTP server, a UDP echo) plus ICMP to
127.0.0.1 and a closed port; the engine runs for about two seconds under uvloop and the
stock asyncio loop and every probe must report, with the right verdict, at its interval.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections import defaultdict

import pytest
import uvloop

from fastcheck.config.loader import load_text
from fastcheck.daemon.driver import SchedulerDriver
from fastcheck.model import CheckKind
from fastcheck.probeplan import plan_probes
from fastcheck.probes.result import Failure, ProbeResult
from fastcheck.probes.runner import ProbeRunner
from fastcheck.scheduler import Scheduler

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def serve(tcp_port: int, http_port: int, udp_port: int) -> list:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr) -> None:
            self.transport.sendto(data, addr)

    loop = asyncio.get_running_loop()
    servers = [await asyncio.start_server(idle, "127.0.0.1", tcp_port),
               await asyncio.start_server(http, "127.0.0.1", http_port)]
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", udp_port))
    return [*servers, transport]


CONFIG = """
track_file weightfile {{
    file {weightfile}
    weight 2
}}
virtual_server 10.0.0.1 80 {{
    lb_algo rr
    lb_kind NAT
    protocol TCP
    delay_loop 0.3
    warmup 0.1
    real_server 127.0.0.1 {tcp} {{ TCP_CHECK {{ connect_timeout 1 }} }}
    real_server 127.0.0.1 {closed} {{ TCP_CHECK {{ connect_timeout 1 }} }}
    real_server 127.0.0.1 {http} {{
        HTTP_GET {{
            url {{
                path /health
                status_code 200
            }}
            connect_timeout 1
        }}
        PING_CHECK {{ connect_timeout 1 }}
        MISC_CHECK {{ misc_path "/bin/sh -c 'exit 0'" }}
        FILE_CHECK {{ track_file weightfile }}
    }}
}}
virtual_server 10.0.0.2 80 {{
    lb_algo rr
    lb_kind NAT
    protocol TCP
    delay_loop 0.3
    warmup 0.1
    # the same TCP check as above: probed once, two owners
    real_server 127.0.0.1 {tcp} {{ TCP_CHECK {{ connect_timeout 1 }} }}
}}
virtual_server 10.0.0.3 53 {{
    lb_algo rr
    lb_kind NAT
    protocol UDP
    delay_loop 0.3
    warmup 0.1
    real_server 127.0.0.1 {udp} {{
        UDP_CHECK {{
            payload 01020304
            require_reply 0102
            connect_timeout 1
        }}
    }}
}}
"""


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_engine_probes_every_check_type_at_its_interval(loop_name, tmp_path):
    ports = {"tcp": free_port(), "closed": free_port(), "http": free_port(),
             "udp": free_port(socket.SOCK_DGRAM)}
    weightfile = tmp_path / "weight"
    weightfile.write_text("3\n")
    config, _ = load_text(CONFIG.format(**ports, weightfile=weightfile), filename="engine.conf")
    plan = plan_probes(config)
    results: dict[int, list[ProbeResult]] = defaultdict(list)

    async def main() -> None:
        servers = await serve(ports["tcp"], ports["http"], ports["udp"])
        loop = asyncio.get_running_loop()
        scheduler = Scheduler(random.Random(7), max_in_flight=64)
        driver_ref: list[SchedulerDriver] = []

        def on_result(probe_id: int, result: ProbeResult) -> None:
            results[probe_id].append(result)
            driver_ref[0].finished(probe_id)

        runner = ProbeRunner(loop, plan, config, on_result)
        driver = SchedulerDriver(scheduler, runner.start, loop=loop)
        driver_ref.append(driver)
        driver.start()
        for probe in plan.probes.values():
            driver.add(probe.id, probe.interval_s, probe.warmup_s, target=probe.host)
        await asyncio.sleep(2.0)
        driver.close()
        runner.close()
        for server in servers:
            server.close()

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(main())

    assert len(plan.probes) == 7  # eight checks, the shared TCP check probed once
    verdicts = {}
    for probe_id, probe in plan.probes.items():
        got = results[probe_id]
        assert 4 <= len(got) <= 8, (probe.key.kind, len(got))  # ~2 s at 0.3 s intervals
        verdicts[(probe.key.kind, probe.key.target.port)] = {
            (r.ok, r.failure) for r in got}
    assert verdicts == {
        (CheckKind.TCP, ports["tcp"]): {(True, None)},
        (CheckKind.TCP, ports["closed"]): {(False, Failure.REFUSED)},
        (CheckKind.HTTP, ports["http"]): {(True, None)},
        (CheckKind.PING, 0): {(True, None)},
        (CheckKind.UDP, ports["udp"]): {(True, None)},
        (CheckKind.MISC, 0): {(True, None)},
        (CheckKind.FILE, 0): {(True, None)},
    }
    file_probe = next(p for p in plan.probes.values() if p.key.kind is CheckKind.FILE)
    assert {r.weight_offset for r in results[file_probe.id]} == {6}  # value 3 x weight 2
    shared = next(p for p in plan.probes.values()
                  if p.key.kind is CheckKind.TCP and p.key.target.port == ports["tcp"])
    assert len(shared.owners) == 2
