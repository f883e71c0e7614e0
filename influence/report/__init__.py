"""Batch regression report: old model vs new model → which training data caused the new mistakes.

    from influence.report import regression_report
    report = regression_report(old_model, new_model, train, eval, group_by="source")
    report.groups[0].column, report.groups[0].value, report.groups[0].share
    report.save("regression-report")      # report.html, report.md, report.json

Sign convention: score > 0 helpful, < 0 harmful; harm = −(sum of scores over the regressions).
"""

from influence.report.document import FAIL_ON, SCHEMA_VERSION, ExampleEntry, GroupEntry, RegressionEntry, Report
from influence.report.explain import Finding, explain_group
from influence.report.regression import regression_report
from influence.report.schema import SchemaError, validate

__all__ = ["FAIL_ON", "SCHEMA_VERSION", "ExampleEntry", "Finding", "GroupEntry", "RegressionEntry", "Report",
           "SchemaError", "explain_group", "regression_report", "validate"]
