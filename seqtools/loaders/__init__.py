"""Background loading: ``prefetch``, ``load_buffers`` and ``epochs``.

Sits on the two other wings. ``api`` holds the public functions, which choose
an engine and put one of the two fronts of ``fronts`` over it; the engines
(``process``, ``threads``, ``copies``) share one protocol (``engine``). Worker
processes run ``_worker`` and hand results over through the shared-memory ring
(``_ring``, ``_transport``; C in ``csrc/``).
"""
