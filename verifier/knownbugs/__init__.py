"""memcached's known concurrency bugs as data (``recipes/known-bugs/*.toml``) and as a suite:
which bugs can be in a build, and a matrix run over the ones that can."""
