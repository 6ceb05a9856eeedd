"""A test hook for reload failures: put this directory on PYTHONPATH and the loader of any
Python process started with it misbehaves on files that ask for it with a marker line.

- ``# inject: raise``  → the loader raises RuntimeError("injected loader fault");
- ``# inject: hang``   → the loader spins forever (a parse that never ends), once it has
  created ``<file>.hanging`` so that a test knows the parse has begun;
- ``# inject: memory`` → the loader allocates 1 MiB blocks until MemoryError.

Files without a marker load normally, so a daemon started on a clean file runs as usual
and only its reload's reader (a child process, which inherits PYTHONPATH) is affected.
Nothing in fastcheck knows about this file.
"""

from __future__ import annotations

try:
    import fastcheck.config.loader as _loader
except ImportError:  # not a fastcheck environment: do nothing
    _loader = None

if _loader is not None:
    _real_load_file = _loader.load_file

    def _load_file(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            with open(path, errors="replace") as file:
                text = file.read()
        except OSError:
            text = ""
        if "# inject: raise" in text:
            raise RuntimeError("injected loader fault")
        if "# inject: hang" in text:
            open(f"{path}.hanging", "w").close()
            while True:
                pass
        if "# inject: memory" in text:
            hog = []
            while True:
                hog.append(bytearray(1 << 20))
        return _real_load_file(path, *args, **kwargs)

    _loader.load_file = _load_file
