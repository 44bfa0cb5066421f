"""report.json (the public contract), its JSON Schema, and the human renderings.

Example:
    >>> validate_report(json.load(open("runs/x/report.json")))   # raises ReportInvalid on a broken report
"""
from compress.report.contract import (SCHEMA_VERSION, ReportInvalid, load_schema, new_report, read_report, report_document,
                                      validate_report, write_report, write_report_files)

__all__ = ["SCHEMA_VERSION", "ReportInvalid", "load_schema", "new_report", "read_report", "report_document", "validate_report",
           "write_report", "write_report_files"]
