"""Every keepalived keyword fastcheck reads is exercised by some test configuration."""

from __future__ import annotations

import re
from pathlib import Path

from fastcheck.config import keywords as k

TESTS = Path(__file__).resolve().parents[1]


def all_keywords() -> set[str]:
    tables = [k.GLOBAL_DEFS, k.SSL, k.TRACK_FILE, k.VIRTUAL_SERVER, k.REAL_SERVER, k.URL,
              k.SMTP_HOST, *k.CHECKS.values()]
    names = {name for table in tables for name in table}
    return names | set(k.CHECK_BLOCKS) | k.TRACK_FILE_BLOCKS | {
        "virtual_server_group", "local_address_group", "global_defs", "SSL"}


def test_every_keyword_appears_in_a_test_configuration():
    text = "\n".join(path.read_text() for path in TESTS.rglob("test_*.py")
                     if path.name != Path(__file__).name)
    missing = sorted(name for name in all_keywords()
                     if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text))
    assert missing == [], f"keywords without a test configuration: {missing}"
