"""blindsum: secure multi-party aggregation of customer-support KPIs."""

__version__ = "0.1.0"

#: Version of the party's anonymization rules (party/anonymize.py). Reports name it in
#: their lineage section; bump it whenever the operators or recognizers change.
ANONYMIZATION_RULES = "blindsum-anon/1"
