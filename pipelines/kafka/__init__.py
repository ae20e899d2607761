"""Kafka clients of Safewatch: topic administration (admin) and event production."""
