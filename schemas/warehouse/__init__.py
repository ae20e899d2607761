"""The warehouse schema, as versioned migrations (see `migrations/`)."""
