"""memcached's three wire protocols as codecs: a ``Command`` in, bytes out; bytes in, a
``Reply`` out. The workload clients speak through these and nothing else."""
