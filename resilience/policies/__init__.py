"""Policies: one package per strategy (ratelimit, retry, breaker)."""
