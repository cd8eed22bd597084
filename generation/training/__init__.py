"""Training infrastructure shared by the coarse and fine stages.

One job per module, after open_clip's trainer split:
`precision` (accelerate, dtypes, TF32, attention backend), `randomness` (data order and per-step
noise as pure functions of seed and step, so resume is exact), `checkpoint` (atomic save/resume
with retention), `caching` (frozen VAE latents and text embeddings computed once), `loss`
(targets, min-SNR, noise offset), `guard` (stop on NaN/inf), `progress` (tensorboard + bar).
"""
