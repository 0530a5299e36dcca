"""Data preparation for the MASPO math experiments: verl parquet for DAPO-Math-17k and the six
evaluation sets of arXiv 2602.17550. Run `python -m maspo_verl.data.prepare --help`."""
