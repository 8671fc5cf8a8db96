"""Reports built from stored results: tables, trade-off figures and summaries."""
