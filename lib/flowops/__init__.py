"""flowops: a batch pipeline for mobile data-traffic operations (流量经营)."""

__version__ = "0.1.0"
