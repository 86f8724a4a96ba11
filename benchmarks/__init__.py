"""pgflow's benchmark suite: throughput and latency against the server's own limit.

Run it with ``python -m benchmarks.run`` (see ``benchmarks/README.md``).
"""
