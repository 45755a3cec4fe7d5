"""The proof that each tick ran once: the run ledger's format and its checker.

Used by the benchmarks (``bench/``), the chaos suite (``tests/chaos/``) and the
integration tests; not shipped in the wheel (standard library only).
"""
