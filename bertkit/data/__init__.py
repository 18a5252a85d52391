"""Readers and feature builders, one module per task: files -> examples -> features."""
