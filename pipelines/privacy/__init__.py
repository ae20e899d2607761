"""Privacy by construction: pseudonymous identifiers and checks that text arrives redacted."""
