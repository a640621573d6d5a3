"""Benchmarks: `make bench` (python -m benchmarks); see docs/benchmarks.md."""
