"""The packagers' release gate: sources/refs x patch sets x scenarios, one verify per cell.

spec (the TOML file) -> plan (cells and their cache keys) -> an executor runs the cells
(run_cell, here or on a Dask cluster) -> gate (each cell against its expectation, one
exit status) -> reports (terminal grid, JSON, JUnit, HTML).
"""
