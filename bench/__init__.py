"""The webhook latency benchmark (SECURITY.md item 4); bench/README.md says what it measures."""
