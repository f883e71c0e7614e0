"""Batch regression report: old model vs new model → which training data caused the new mistakes,
and would removing or fixing it repair the model?

    from influence.report import regression_report
    report = regression_report(old_model, new_model, train, eval, group_by="source")
    report.groups[0].column, report.groups[0].value, report.groups[0].share
    report.save("regression-report")      # report.html, report.md, report.json

Sign convention: score > 0 helpful, < 0 harmful; harm = −Σ scores / n_train over the
regressions (`influence.harm`), in units of the eval loss: harm > 0 caused them.
"""

from influence.report.document import FAIL_ON, SCHEMA_VERSION, ExampleEntry, GroupEntry, RegressionEntry, Report
from influence.report.explain import Finding, explain_group
from influence.report.flags import Flag, read_flags, write_flags
from influence.report.regression import ReportOptions, regression_report
from influence.report.schema import SchemaError, validate

__all__ = ["FAIL_ON", "SCHEMA_VERSION", "ExampleEntry", "Finding", "Flag", "GroupEntry", "RegressionEntry", "Report",
           "ReportOptions", "SchemaError", "explain_group", "read_flags", "regression_report", "validate",
           "write_flags"]
