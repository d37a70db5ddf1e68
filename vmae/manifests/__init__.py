"""The manifest spine: schema, Parquet/CSV/JSONL I/O, validation and the packaged label maps."""
from vmae.manifests.errors import ManifestError
from vmae.manifests.io import conform, empty_manifest, read_manifest, read_table, write_manifest
from vmae.manifests.schema import COLUMNS, KEY_PATTERN, SCHEMA, make_key
from vmae.manifests.validate import row_problems, validate

__all__ = ["COLUMNS", "KEY_PATTERN", "SCHEMA", "ManifestError", "conform", "empty_manifest", "make_key",
           "read_manifest", "read_table", "row_problems", "validate", "write_manifest"]
