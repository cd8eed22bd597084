"""The end-to-end runner: one config file drives every stage, skipping what is already done."""
