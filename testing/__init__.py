"""Fixtures the tests and the benchmarks share, and that no Pi installs.

Not in the package (``pyproject.toml`` installs ``agent`` and ``devices`` only): the clustered
brokers of :mod:`testing.localcluster` start NATS and RabbitMQ for the compatibility,
failover and ACL tests and ``bench.failover``; :mod:`testing.ippserver` starts CUPS's
ippeveprinter, a real IPP printer, for the IPP label printer's tests and ``bench.pack``.
"""
