"""The lab: a whole VPN mesh in network namespaces, for the demo, tests and benchmarks."""
