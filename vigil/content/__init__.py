"""Shipped content: rules, decoders, lists and the MITRE ATT&CK table, as YAML data."""

from pathlib import Path

# Found from this file, which is never compiled: a compiled module's __file__ is in the build
# directory (vigil/compiled.py), not beside the content.
CONTENT_DIR = Path(__file__).resolve().parent
