"""Generation stage: diversify (text-driven) and reference (img2img) inference of rare subtypes.

Entry points: `python -m generation.inference.cli {diversify,reference}` and
`generation.inference.runner.run_generation(GenerationRequest(...))`.
"""
