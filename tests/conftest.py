"""Shared fixtures: the compiled (``c``) and pure (``py``) twins of ``fastcheck._ext`` modules.

Twin tests take the implementation from a fixture parametrized over the ids ``c`` and
``py``, importing ``fastcheck._ext.<name>_c`` / ``<name>_py`` directly (bypassing the
selector). A compiled twin that cannot be imported skips its tests with the reason shown
in the summary, unless ``FASTCHECK_REQUIRE_EXTENSIONS=1``, which makes that a failure.
"""

import importlib
from types import ModuleType

import pytest

from fastcheck._ext._select import REQUIRE_EXTENSIONS_ENV, env_flag

TWIN_IDS = ("c", "py")


def import_twin(name: str, impl: str) -> ModuleType:
    """Import ``fastcheck._ext.<name>_<impl>``, skipping (see module doc) if ``c`` is absent."""
    module = f"fastcheck._ext.{name}_{impl}"
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if impl != "c" or env_flag(REQUIRE_EXTENSIONS_ENV):
            raise
        pytest.skip(f"{module} is not importable ({exc}); build it with `pip install -e .`")


@pytest.fixture(scope="session", params=TWIN_IDS)
def checksum_impl(request: pytest.FixtureRequest) -> ModuleType:
    """Each twin of ``fastcheck._ext.checksum`` in turn."""
    return import_twin("checksum", request.param)


@pytest.fixture(scope="session")
def checksum_twins() -> tuple[ModuleType, ModuleType]:
    """``(checksum_c, checksum_py)``, for tests that compare the twins."""
    return import_twin("checksum", "c"), import_twin("checksum", "py")


@pytest.fixture(scope="session", params=TWIN_IDS)
def icmp_impl(request: pytest.FixtureRequest) -> ModuleType:
    """Each twin of ``fastcheck._ext.icmp`` in turn."""
    return import_twin("icmp", request.param)


@pytest.fixture(scope="session")
def icmp_twins() -> tuple[ModuleType, ModuleType]:
    """``(icmp_c, icmp_py)``, for tests that compare the twins."""
    return import_twin("icmp", "c"), import_twin("icmp", "py")


@pytest.fixture(scope="session", params=TWIN_IDS)
def tcpconnect_impl(request: pytest.FixtureRequest) -> ModuleType:
    """Each twin of ``fastcheck._ext.tcpconnect`` in turn."""
    return import_twin("tcpconnect", request.param)


@pytest.fixture(scope="session")
def tcpconnect_twins() -> tuple[ModuleType, ModuleType]:
    """``(tcpconnect_c, tcpconnect_py)``, for tests that compare the twins."""
    return import_twin("tcpconnect", "c"), import_twin("tcpconnect", "py")
