"""Importers: each turns one source of images + masks + attributes into builder Samples."""
