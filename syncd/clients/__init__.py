"""Async clients of the three upstream services: ClassCharts, epaas and Chengjiyun."""
