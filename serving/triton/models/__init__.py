"""Implementations of the generated repository's Python-backend models (imported inside Triton's stub only:
they import `triton_python_backend_utils`)."""
