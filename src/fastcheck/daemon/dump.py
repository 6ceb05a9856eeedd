"""SIGUSR1 state dumps: a readable text file (like keepalived's) and a JSON file.

Owns: rendering the runtime's current state — configuration summary, the IPVS table
fastcheck applied, the health snapshot and counters — and writing both files atomically
(temporary file, then rename).
Must not: change any state or read the kernel; the runtime passes everything in.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

from fastcheck.ipvs.table import Table
from fastcheck.model import Config
from fastcheck.render import summary, table_json, table_lines, to_jsonable

DEFAULT_DATA_PATH = "/tmp/fastcheck.data"
DEFAULT_JSON_PATH = "/tmp/fastcheck.json"


def text_dump(config_path: str, config: Config, applied: Table,
              health: Mapping[str, Any], counters: Mapping[str, Any]) -> str:
    lines = [
        "------< fastcheck state dump >------",
        f"time: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}",
        f"pid: {os.getpid()}",
        f"configuration: {config_path}: {summary(config)}",
        "",
        "------< counters >------",
        *(f" {name} = {value}" for name, value in counters.items()),
        "",
        f"------< IPVS table applied by fastcheck ({len(applied)} services) >------",
        *table_lines(applied),
        "",
        "------< health >------",
        json.dumps(to_jsonable(dict(health)), indent=2, sort_keys=True, default=str),
        "",
    ]
    return "\n".join(lines)


def json_dump(config_path: str, config: Config, applied: Table,
              health: Mapping[str, Any], counters: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "time": time.time(),
        "config": {"path": config_path, "summary": summary(config),
                   "virtual_servers": len(config.virtual_servers),
                   "real_servers": sum(len(vs.real_servers) for vs in config.virtual_servers)},
        "counters": dict(counters),
        "ipvs": table_json(applied),
        "health": to_jsonable(dict(health)),
    }


def _write_atomic(path: str, text: str) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8", errors="backslashreplace") as handle:
        handle.write(text)
    os.replace(temporary, path)


def write_dumps(data_path: str, json_path: str, config_path: str, config: Config,
                applied: Table, health: Mapping[str, Any],
                counters: Mapping[str, Any]) -> None:
    """Writes both files; OSError propagates for the caller to log."""
    _write_atomic(data_path, text_dump(config_path, config, applied, health, counters))
    document = json_dump(config_path, config, applied, health, counters)
    _write_atomic(json_path, json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
