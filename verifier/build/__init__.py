"""Building memcached: toolchain checks, version recipes, the build cache, the builder."""
