"""Serving: an OpenAI-compatible HTTP server and a small web page."""
