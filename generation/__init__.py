"""Tiger's diffusion side: model loading, coarse and fine training, inference, filtering.

Importing it switches every hub client offline (generation.offline), before any submodule
imports diffusers: bitsandbytes, which diffusers imports when it is installed, asks the hub about
a kernel as it is imported, before any entry point's `main` could run
(tests/test_offline.py). Caches move into a run folder only when an entry point names one."""

from generation.offline import enforce_offline

enforce_offline()
