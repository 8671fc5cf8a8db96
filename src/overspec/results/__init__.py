"""Tidy result records and provenance."""

from overspec.results.provenance import config_hash, environment, package_versions
from overspec.results.records import SCHEMA, Record, read_jsonl, write_csv, write_jsonl

__all__ = ["Record", "SCHEMA", "config_hash", "environment", "package_versions", "read_jsonl", "write_csv",
           "write_jsonl"]
