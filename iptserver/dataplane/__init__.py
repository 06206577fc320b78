"""The kernel dataplane: what iptserver programs (plan) and the adapters that do it."""
