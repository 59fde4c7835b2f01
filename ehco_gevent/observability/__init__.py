"""What a node tells its operator: Prometheus metrics, host metrics, ping and relay sync."""
