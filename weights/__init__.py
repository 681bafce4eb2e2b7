"""Embedded default checkpoints (safetensors) with their license notices; see PROVENANCE.md."""
