"""Race amplification: one LD_PRELOAD library (libamplify.c) driven by data rules."""
