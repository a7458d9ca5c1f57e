"""In-process fakes of ClassCharts, epaas and Chengjiyun, built from the seed documents.

They serve ``syncd demo`` and the tests on 127.0.0.1. They follow the documents, not our clients:
where the two disagree, the fake is right.
"""
