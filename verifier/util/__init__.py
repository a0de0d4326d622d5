"""Small typed helpers shared by the pipeline stages."""
