"""Developer tools: throwaway etcd processes for tests and the local demo, and
what ``/proc`` says about worker processes (for tests and benchmarks).

Nothing here is used by the scheduler at run time, and none of it ships in the
wheel (pyproject's packages are ``scheduler*`` and ``workers*``): it is imported
from a checkout, with the repository root on ``sys.path``.
"""
