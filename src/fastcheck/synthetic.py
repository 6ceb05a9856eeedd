"""Generated keepalived-style configurations of any size, for benchmarks and tests.

Owns: deterministic text of a farm of N virtual servers × M real servers with a mix of
check types, and a "next version" of it with realistic reload edits.
Must not: write files by itself or depend on anything but its arguments.
"""

from __future__ import annotations

from collections.abc import Iterator

CHECKS = (
    "        TCP_CHECK {\n            connect_timeout 3\n        }\n",
    "        HTTP_GET {\n            url {\n                path /health\n"
    "                status_code 200\n            }\n            connect_timeout 2\n"
    "            retry 2\n            delay_before_retry 1.5\n        }\n",
    "        MISC_CHECK {\n            misc_path \"/usr/local/bin/check {rs}\"\n"
    "            misc_timeout 5\n        }\n",
)


def _vip(index: int) -> str:
    return f"10.{100 + index // 65536}.{(index // 256) % 256}.{index % 256}"


def _rip(vs: int, rs: int) -> str:
    return f"172.{16 + vs // 65536}.{(vs // 256) % 256}.{vs % 256 if rs == 0 else 0}" \
        if False else f"172.{16 + (vs // 250) % 16}.{vs % 250}.{rs + 1}"


def farm_lines(virtual_servers: int, real_servers: int, *, revision: int = 0) -> Iterator[str]:
    """A farm; `revision` 1 edits it as a reload would (removals, additions, changes).

    Revision 1: every 10th virtual server is gone, 50 new ones appear, every 7th
    virtual server changes scheduler, and in every virtual server the last real server
    is replaced by a new one and the first one changes weight.
    """
    yield "global_defs {\n    router_id synthetic\n}\n\n"
    for vs in range(virtual_servers + (50 if revision else 0)):
        if revision and vs < virtual_servers and vs % 10 == 9:
            continue
        algo = "rr" if revision and vs % 7 == 0 else "wlc"
        yield (f"virtual_server {_vip(vs)} 80 {{\n    delay_loop 5\n    lb_algo {algo}\n"
               f"    lb_kind NAT\n    protocol TCP\n")
        for rs in range(real_servers):
            rs_index = rs
            if revision and rs == real_servers - 1:
                rs_index = real_servers + 1
            weight = 2 if revision and rs == 0 else 1
            address = _rip(vs, rs_index)
            check = CHECKS[(vs + rs) % len(CHECKS)].replace("{rs}", address)
            yield f"    real_server {address} 8080 {{\n        weight {weight}\n{check}    }}\n"
        yield "}\n"


def farm(virtual_servers: int, real_servers: int, *, revision: int = 0) -> str:
    return "".join(farm_lines(virtual_servers, real_servers, revision=revision))
