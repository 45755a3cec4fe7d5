"""Benchmarks for etcron: fire lag and throughput (W1), failover (W2), etcd ceiling (W4).

See ``bench/README.md`` for how to run each and what it prints.
"""
