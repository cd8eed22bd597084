"""Stage 0: fit the tiny default's AutoencoderKL on the dataset's own images, then freeze it."""
