"""Probes: one module per check type. A probe reports a result; it never decides health."""
