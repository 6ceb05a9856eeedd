"""Pick the compiled (``<name>_c``) or pure-Python (``<name>_py``) twin of a hot path.

Owns: the selection rule, and the report of which twin each selector chose.
Must not: keep a registry or any other module-level mutable state (the report is derived
from the selector modules themselves), configure logging (it only emits through the
``"fastcheck"`` logger), or import a twin before a selector asks for it.

The rule, read from the environment at every ``load_twin`` call:

- ``FASTCHECK_NO_EXTENSIONS=1``: always the pure twin.
- otherwise the compiled twin; if importing it raises ``ImportError``, the pure twin and
  a warning, unless ``FASTCHECK_REQUIRE_EXTENSIONS=1`` (set in the systemd unit), in which
  case the ``ImportError`` propagates. ``NO_EXTENSIONS`` wins over ``REQUIRE_EXTENSIONS``:
  it is an explicit request, not a failure.

A flag counts as set when its value is ``1``, ``true``, ``yes`` or ``on`` (any case); so
``FASTCHECK_NO_EXTENSIONS=0`` means "not set".
"""

import importlib
import logging
import os
import pkgutil
from types import ModuleType

NO_EXTENSIONS_ENV = "FASTCHECK_NO_EXTENSIONS"
REQUIRE_EXTENSIONS_ENV = "FASTCHECK_REQUIRE_EXTENSIONS"

_PACKAGE = __name__.rpartition(".")[0]  # "fastcheck._ext"
_TRUTHY = frozenset({"1", "true", "yes", "on"})

logger = logging.getLogger("fastcheck")


def env_flag(name: str) -> bool:
    """Whether the environment variable ``name`` is set to a true value (see module doc)."""
    return os.environ.get(name, "").strip().lower() in _TRUTHY


def load_twin(name: str) -> ModuleType:
    """Import and return ``fastcheck._ext.<name>_c`` or ``<name>_py`` by the rule above."""
    base = f"{_PACKAGE}.{name}"
    if env_flag(NO_EXTENSIONS_ENV):
        return importlib.import_module(f"{base}_py")
    try:
        return importlib.import_module(f"{base}_c")
    except ImportError as exc:
        if env_flag(REQUIRE_EXTENSIONS_ENV):
            raise
        logger.warning(
            "compiled %s_c is unavailable (%s: %s); using the slower pure-Python %s_py. "
            "Reinstall fastcheck with a C compiler, or set %s=1 to make this fatal.",
            base, type(exc).__name__, exc, base, REQUIRE_EXTENSIONS_ENV,
        )  # fmt: skip
        return importlib.import_module(f"{base}_py")


def implementation_of(twin: ModuleType) -> str:
    """``"c"`` or ``"py"``: which twin ``twin`` is, read from its module name."""
    kind = twin.__name__.rpartition("_")[2]
    if kind not in ("c", "py"):
        raise ValueError(f"{twin.__name__} is not a twin module (expected *_c or *_py)")
    return kind


def implementations() -> dict[str, str]:
    """Map every twin in this package to the implementation its selector uses.

    A twin is a ``<name>_py`` module with a ``<name>`` selector beside it. Each selector
    is imported (a no-op if already loaded) and its ``IMPLEMENTATION`` read, so the answer
    covers all hot paths, not just the ones imported so far. With
    ``FASTCHECK_REQUIRE_EXTENSIONS=1`` a missing compiled twin raises ``ImportError`` here.
    """
    package = importlib.import_module(_PACKAGE)
    modules = {info.name for info in pkgutil.iter_modules(package.__path__)}
    names = sorted(m[: -len("_py")] for m in modules if m.endswith("_py"))
    return {
        name: importlib.import_module(f"{_PACKAGE}.{name}").IMPLEMENTATION
        for name in names
        if name in modules
    }
