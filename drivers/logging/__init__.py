"""Container log drivers: ``jsonfile`` writes and reads Docker's json-file log."""
