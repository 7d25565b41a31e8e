//! Wires watcher, store and inference: ingest, workers, reclaim, TTL sweeps, health.
