"""File formats: safetensors model files with atomic writes, architecture configs, and the schemas that check everything read from a file."""
