"""Benchmarks and the fleet simulator (issue 7); see bench/README.md."""
