"""What to run: sweep specs (one file per experiment), the staged pipeline and its launcher."""
