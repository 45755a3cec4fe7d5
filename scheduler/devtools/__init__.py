"""Developer tools: throwaway etcd processes for tests and the local demo, and
what ``/proc`` says about worker processes (for tests and benchmarks).

Nothing here is used by the scheduler at run time.
"""
