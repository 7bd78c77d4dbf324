"""Errors that flowops reports to people as one clear line."""


class FlowopsError(Exception):
    """A failure with a message meant for the operator: what went wrong, where, and what to do."""


class ConfigError(FlowopsError):
    """A configuration file is missing, malformed, or has a wrong key or value."""


class LakeError(FlowopsError):
    """A lake table cannot be read or written as asked."""


class LandingError(FlowopsError):
    """Landing data is missing or unusable as a whole."""


class QualityGateFailed(FlowopsError):
    """A critical expectation failed on data about to be written or read downstream: the run stops there."""
