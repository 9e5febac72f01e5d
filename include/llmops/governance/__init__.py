"""Data governance over time: retention of snapshots, and data subjects' erasure requests."""
