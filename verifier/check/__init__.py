"""Judging what the clients saw: per-key linearizability of memcached's answers."""
