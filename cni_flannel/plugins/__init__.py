"""One module per plugin; each exposes add, check, delete, status and gc taking a Request."""
