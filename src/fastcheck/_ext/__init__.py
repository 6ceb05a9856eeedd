"""Hot paths, each written twice with one API: ``x_c.pyx`` (compiled) and ``x_py.py`` (pure).

Owns: the twins and their selectors. ``x.py`` is the module the rest of fastcheck imports;
it asks ``_select.load_twin("x")`` for the compiled or pure twin and re-exports that twin's
API plus ``IMPLEMENTATION`` ("c" or "py"). ``_select.implementations()`` reports the choice
for every twin (for ``fastcheck doctor`` and bench output).

Must not: hold state, open sockets, read clocks or decide health. Twins compute; callers
do I/O. Code outside this package imports the selector ``x``, never ``x_c`` or ``x_py``
(tests and benches are the exception: they compare the twins directly).
"""
