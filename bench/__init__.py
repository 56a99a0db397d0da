"""Benchmarks (run by hand: ``python -m bench.run``) and their synthetic data (:mod:`.synthetic`)."""
