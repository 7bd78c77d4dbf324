"""Errors that flowops reports to people as one clear line."""


class FlowopsError(Exception):
    """A failure with a message meant for the operator: what went wrong, where, and what to do."""

    exit_code = 1


class NothingToDoYet(FlowopsError):
    """What a step needs has not landed yet (e.g. training before two tag months are labelled): not a failure of the
    data or the code. The command exits with 99, which a scheduler takes as "skipped" (Airflow's BashOperator does
    by default), and says what it waits for."""

    exit_code = 99


class ConfigError(FlowopsError):
    """A configuration file is missing, malformed, or has a wrong key or value."""


class LakeError(FlowopsError):
    """A lake table cannot be read or written as asked."""


class LandingError(FlowopsError):
    """Landing data is missing or unusable as a whole."""


class QualityGateFailed(FlowopsError):
    """A critical expectation failed on data about to be written or read downstream: the run stops there."""
