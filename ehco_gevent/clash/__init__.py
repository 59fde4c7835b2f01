"""Clash subscriptions: grouping proxies into relays (pure) and fetching/serving them."""
