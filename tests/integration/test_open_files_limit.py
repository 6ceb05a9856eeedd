"""The daemon raises its soft open-files limit to the hard one (one socket per probe)."""

from __future__ import annotations

import subprocess
import sys


def test_soft_nofile_limit_is_raised_to_the_hard_limit() -> None:
    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))\n"
        "from fastcheck.daemon.signals import raise_open_files_limit\n"
        "print(raise_open_files_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True).stdout.split()
    assert out == ["4096", "4096"]
