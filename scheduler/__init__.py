"""etcron: a distributed cron scheduler on etcd.

``__version__`` is the one source of the version (``pyproject.toml`` reads it):
a constant, so that ``etcron version`` does not pay for ``importlib.metadata``.
"""

__version__ = "0.1.0"
