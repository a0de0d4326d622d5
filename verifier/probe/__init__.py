"""Liveness probes: telnet-style ``stats`` checks with pexpect."""
