"""Serve: the matching HTTP API and the Gradio demo on Ray Serve (see ``serve.app``)."""
