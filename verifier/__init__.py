"""memcached patch verifier.

Pipeline: source -> patch -> build -> run -> stress/probe -> verdict -> bisect -> report.
"""

__version__ = "0.1.0"
