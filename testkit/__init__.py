"""What the tests and the benchmarks (bench/) share: starting the real `orchard` CLI on free
loopback ports, a platform API client over HTTP, synthetic corpora, a throwaway
PostgreSQL, Debian's Chromium. Importing any of it has no side effects (no environment
change, no temporary directory); pytest's own setup stays in tests/conftest.py.
"""
