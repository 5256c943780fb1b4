"""Debugging tools: finite-difference gradient checks, anomaly mode and model summaries."""
