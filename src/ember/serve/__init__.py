"""`ember serve`: a FastAPI app with dynamic micro-batching over a finished run."""

from ember.serve.app import create_app

__all__ = ["create_app"]
