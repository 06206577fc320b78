"""Exit health: probes through each exit, up/down with hysteresis, failover or block."""
