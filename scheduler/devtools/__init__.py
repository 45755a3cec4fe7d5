"""Developer tools: throwaway etcd processes for tests and the local demo.

Nothing here is used by the scheduler at run time.
"""
