"""Running memcached: the server process and its lifecycle."""
