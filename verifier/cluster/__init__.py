"""Running work on a Dask distributed cluster: one whole machine per task, each task in a
child process of its own (so workers may run under their nanny), lost workers said so."""
