"""blindsum: secure multi-party aggregation of customer-support KPIs."""

__version__ = "0.1.0"
