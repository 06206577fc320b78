"""Configuration files for the programs around iptserver, rendered from its settings."""
