"""Model specs, parameter accounting and tokenizers (backend-independent)."""
