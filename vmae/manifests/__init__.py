"""The manifest spine: schema, Parquet/CSV/JSONL I/O, validation and the packaged label maps."""
from vmae.manifests.errors import ManifestError
from vmae.manifests.io import (conform, empty_manifest, manifest_base, read_manifest, read_table, resolve_path,
                               write_manifest)
from vmae.manifests.schema import COLUMNS, KEY_PATTERN, MAX_KEY_LENGTH, SCHEMA, key_problem, make_key
from vmae.manifests.validate import row_problems, validate

__all__ = ["COLUMNS", "KEY_PATTERN", "MAX_KEY_LENGTH", "SCHEMA", "ManifestError", "conform", "empty_manifest",
           "key_problem", "make_key", "manifest_base", "read_manifest", "read_table", "resolve_path", "row_problems",
           "validate", "write_manifest"]
