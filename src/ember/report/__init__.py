"""The run report: plots and a self-contained HTML page."""

from ember.report.html import write_report
from ember.report.plots import Examples

__all__ = ["write_report", "Examples"]
