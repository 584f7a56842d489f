"""What a researcher looks at: the results tables (table.py, training.py), statistics and findings
(stats.py, findings.py), and the figures (plots.py and the modules it draws with)."""
