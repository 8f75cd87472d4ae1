"""The pieces of the self-contained HTML report pages: HTML helpers, the run and ensemble sections, the
collections and duplicates sections."""
