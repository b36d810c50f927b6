"""The comparison report: table rows from the metrics files, plots, Markdown and CSV."""
