"""Notifications: rules (``notify:`` on a job, ``notify.defaults`` in the config),
the events derived from run records, the sinks (webhook, Slack, email) and the
leader master's delivery service. See docs/operations.md, "Notifications"."""
