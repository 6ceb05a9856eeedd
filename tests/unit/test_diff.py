"""diff(old, new) and the IPVS table behind `plan`: what a reload removes, edits, keeps."""

from __future__ import annotations

from fastcheck.config.loader import load_text
from fastcheck.diff import diff
from fastcheck.ipvs.ops import DestinationOp, LocalAddressOp, ServiceOp, Verb
from fastcheck.ipvs.reconcile import reconcile
from fastcheck.ipvs.table import desired_table
from fastcheck.model import VsKind

BEFORE = """
local_address_group L1 {
    192.168.0.1-2
}
virtual_server_group WEB {
    10.0.0.10-11 80
}
virtual_server group WEB {
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server 172.16.0.1 8080 { weight 1
        HTTP_GET { url { path /health } }
    }
    real_server 172.16.0.2 8080 { weight 1
        HTTP_GET { url { path /health } }
    }
}
virtual_server 10.0.0.1 443 {
    lb_algo wlc
    lb_kind FNAT
    laddr_group_name L1
    protocol TCP
    real_server 172.16.1.1 443 { TCP_CHECK { } }
    real_server 172.16.1.2 443 { TCP_CHECK { } }
}
virtual_server 10.0.0.2 53 {
    lb_algo rr
    lb_kind DR
    protocol UDP
    real_server 172.16.2.1 53 { DNS_CHECK { } }
}
"""

AFTER = """
local_address_group L1 {
    192.168.0.2-3
}
virtual_server_group WEB {
    10.0.0.10-12 80
}
virtual_server group WEB {
    lb_algo wrr
    lb_kind NAT
    protocol TCP
    real_server 172.16.0.1 8080 { weight 5
        HTTP_GET { url { path /health } }
    }
    real_server 172.16.0.3 8080 { weight 1
        HTTP_GET { url { path /health } }
    }
}
virtual_server 10.0.0.1 443 {
    lb_algo wlc
    lb_kind FNAT
    laddr_group_name L1
    protocol TCP
    real_server 172.16.1.1 443 { TCP_CHECK { } }
    real_server 172.16.1.2 443 { TCP_CHECK { connect_port 8443 } }
}
"""


def load(text):
    return load_text(text, filename="t.conf", config_id="x")[0]


def test_identical_configurations_change_nothing():
    assert diff(load(BEFORE), load(BEFORE)).unchanged


def test_reload_pair_classifies_servers_and_checks():
    d = diff(load(BEFORE), load(AFTER))
    assert [str(k) for k in d.vs_removed] == ["UDP 10.0.0.2:53"]
    assert d.vs_added == ()
    assert [k.kind for k in d.vs_changed] == [VsKind.GROUP, VsKind.ADDRESS]
    assert [(k.address, k.port) for k in d.rs_removed] == [("172.16.0.2", 8080),
                                                            ("172.16.2.1", 53)]
    assert [(k.address, k.port) for k in d.rs_added] == [("172.16.0.3", 8080)]
    # 172.16.0.1 changes weight but is the same real server: its health carries over.
    assert ("172.16.0.1", 8080) in [(k.address, k.port) for k in d.rs_kept]
    assert ("172.16.1.2", 443) in [(k.address, k.port) for k in d.rs_kept]
    # ... but its TCP check moved port, so that check starts fresh.
    assert [k.probe.target.port for k in d.checks_added] == [8080, 8443]
    assert len(d.checks_kept) == 2


def test_reload_operations_are_ordered_adds_edits_removals():
    d = diff(load(BEFORE), load(AFTER))
    described = [op.describe() for op in d.ops]
    verbs = [op.verb for op in d.ops]
    first_delete = verbs.index(Verb.DELETE)
    assert Verb.ADD not in verbs[first_delete:] and Verb.EDIT not in verbs[first_delete:]
    assert "add service TCP  10.0.0.12:80 (wrr)" in described
    assert "edit service TCP  10.0.0.10:80: rr -> wrr" in described
    assert ("edit destination 172.16.0.1:8080 in TCP  10.0.0.11:80 (Masq weight 5) was "
            "(Masq weight 1)") in described
    assert "add local address 192.168.0.3 in TCP  10.0.0.1:443" in described
    assert "delete local address 192.168.0.1 in TCP  10.0.0.1:443" in described
    assert "delete destination 172.16.0.2:8080 in TCP  10.0.0.10:80" in described
    assert described[-1] == "delete service UDP  10.0.0.2:53"


def test_reconcile_is_idempotent_after_applying_its_operations():
    desired, observed = desired_table(load(AFTER)), desired_table(load(BEFORE))
    for op in reconcile(desired, observed):
        if isinstance(op, ServiceOp):
            if op.verb is Verb.DELETE:
                del observed[op.service]
            elif op.verb is Verb.ADD:
                from fastcheck.ipvs.table import Service
                observed[op.service] = Service(op.settings)
            else:
                observed[op.service].settings = op.settings
        elif isinstance(op, DestinationOp):
            dests = observed[op.service].destinations
            if op.verb is Verb.DELETE:
                del dests[op.destination]
            else:
                dests[op.destination] = op.settings
        elif isinstance(op, LocalAddressOp):
            svc = observed[op.service]
            svc.local_addresses = (svc.local_addresses | {op.address}
                                   if op.verb is Verb.ADD
                                   else svc.local_addresses - {op.address})
    assert reconcile(desired, observed) == []
    assert observed.keys() == desired.keys()


def test_group_expands_to_one_kernel_service_per_address():
    table = desired_table(load(AFTER))
    keys = sorted(str(k) for k in table)
    assert keys == ["TCP  10.0.0.10:80", "TCP  10.0.0.11:80", "TCP  10.0.0.12:80",
                    "TCP  10.0.0.1:443"]
    assert table[next(k for k in table if k.port == 443)].local_addresses == {
        "192.168.0.2", "192.168.0.3"}


def test_fullnat_local_addresses_skip_fwmark_entries():
    table = desired_table(load("""
        local_address_group L { 192.168.0.1 }
        virtual_server_group G {
            10.0.0.1 80
            fwmark 7
        }
        virtual_server group G {
            lb_kind FNAT
            laddr_group_name L
            protocol TCP
            lb_algo rr
            real_server 172.16.0.1 80 { }
        }
    """))
    by_kind = {bool(key.fwmark): service.local_addresses for key, service in table.items()}
    assert by_kind == {False: {"192.168.0.1"}, True: frozenset()}
