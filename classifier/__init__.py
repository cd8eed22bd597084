"""Binary ResNet classifier per rare subtype, trained on real (+ synthetic, train split only)
images, with the controls (duplicated-real, classic augmentation) that make the comparison honest.
"""
