"""Inference: stream long recordings (stream.py), classify files and folders (predict.py), export (export.py)."""
