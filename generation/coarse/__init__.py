"""Coarse stage: text-to-image fine-tuning of Stable Diffusion on ultrasound frames + texts."""
