"""`fastcheck bench`: the real probe engine against targets the bench starts and removes.

Owns: the bench's target layout (`layout`), the loopback targets it serves (`targets`),
one measured run of the engine (`measure`), the table/JSON/sizing output (`report`), the
optional plot (`plot`) and the command line (`command`).
Must not: copy engine code (it drives `fastcheck.daemon.engine.LocalEngine` or the worker
engine exactly as the daemon does), touch IPVS, or send traffic beyond loopback.
"""
