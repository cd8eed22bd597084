"""Filtering stage: a domain CLIP score and the MoSo data-pruning score decide which synthetic
images are kept (CLI: `python -m generation.filtering.cli {train-clip,clip-score,moso,filter}`).
"""
