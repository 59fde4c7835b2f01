"""Choosing a relay's remote: balancing strategies with passive failover (balancer), active
health checks (health), and the per-remote state the web pages and metrics show (state)."""
