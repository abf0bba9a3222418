"""Data: locating corpora, tokenising them, and batching (seeded, resumable, rank-independent)."""
