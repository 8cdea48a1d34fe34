"""Suite and run reports: one self-contained HTML file and a markdown twin (``fl-mia report``)."""
