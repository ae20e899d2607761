"""Local infrastructure that `safewatch infra` runs on this machine (Kafka broker)."""
