//! Load generator and benchmarks (issue 8).
