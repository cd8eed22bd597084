"""Tiger's command-line entry points and the end-to-end runner."""
