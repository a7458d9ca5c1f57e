"""The sync engine: a cycle (poll, map, diff, enqueue), the drain to Chengjiyun, the daemon."""
