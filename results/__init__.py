"""What a researcher looks at: the results table (table.py) and the paper's figures (plots.py)."""
