"""The core contract: Module, Parameter, the call path (hooks, input specs), errors, randomness and the array module."""
