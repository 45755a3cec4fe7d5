"""Peer schedulers run on the same workloads as etcron (W1, W2): Celery + RedBeat, APScheduler 3.

They run in their own virtualenv, ``bench/.peers-venv`` (created by ``bench/peers/setup.sh``),
never in the project's; the ledgers they write are read by ``bench.analyze`` run
with the project's interpreter.
"""
