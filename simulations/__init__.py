"""Network and fault simulations, scale studies and benchmarks."""
