"""Aggregator: round lifecycle, durable store, custodian, release and reports."""
