"""Benchmarks: `make bench` runs them all and writes benchmarks/latest.md."""
