"""Everything syncd keeps in its SQLite file; the only package that holds SQL."""

from syncd.store.database import (
    FAILING_AFTER,
    MIGRATIONS,
    NOTIFIED_DIGEST_KEY,
    SCHEMA_VERSION,
    Store,
    StoreError,
    class_status_digest,
)

__all__ = [
    "FAILING_AFTER",
    "MIGRATIONS",
    "NOTIFIED_DIGEST_KEY",
    "SCHEMA_VERSION",
    "Store",
    "StoreError",
    "class_status_digest",
]
