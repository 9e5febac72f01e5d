"""Ingestion: SQL databases and REST APIs into raw snapshots."""
