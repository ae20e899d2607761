"""The one base exception of Safewatch; each package raises a subclass with what to fix."""


class SafewatchError(Exception):
    """An error a person can act on: the message names the setting, file or value to change."""


class ConfigError(SafewatchError):
    """Settings are missing or invalid."""


class InfraError(SafewatchError):
    """A local component (broker, jars, database) could not be set up or reached."""
