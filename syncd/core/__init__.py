"""The pure core: records, mapping, diff, plans, health rules and report rendering.

Nothing here does I/O or imports an I/O library; see docs/architecture.md.
"""
