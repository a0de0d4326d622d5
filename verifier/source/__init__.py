"""Obtaining memcached source: git repositories (URL or path) and Debian source packages."""
