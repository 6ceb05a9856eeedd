"""IPVS: the table as data, operations, reconciliation and (later) kernel backends."""
