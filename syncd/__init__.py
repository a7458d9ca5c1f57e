"""syncd: keeps Chengjiyun (成绩云) in step with a school's ClassCharts and epaas data."""

__version__ = "0.1.0"

__all__ = ["__version__"]
