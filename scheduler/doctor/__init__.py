"""``etcron doctor``: checks of a whole etcron cluster, straight against etcd.

- :mod:`scheduler.doctor.report`: a check's result (OK, WARN, FAIL) and the exit code.
- :mod:`scheduler.doctor.tls`: when an endpoint's server certificate expires.
- :mod:`scheduler.doctor.checks`: what the keyspace says (clocks, versions,
  locks, selectors, space, alarms, notifications).
- :mod:`scheduler.doctor.run`: runs them all, each within its timeout.
"""
