"""Tests of the benchmarks and the fleet simulator (bench/)."""
