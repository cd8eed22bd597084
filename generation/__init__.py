"""Tiger's diffusion side: model loading, coarse and fine training, inference, filtering."""
