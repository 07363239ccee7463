"""Start-up benchmarks per backend."""
