"""Curation: one module per source or step that turns raw datasets into manifests and clips."""
