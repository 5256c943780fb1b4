"""Layers: one file per family (dense, conv, pooling, normalization, ...)."""
