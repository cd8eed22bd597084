"""Human-readable arm names and definitions, shared by the report and the CLI help."""

ARM_TITLES = {
    "real": "1 real only",
    "classic_aug": "2 real + classic augmentation",
    "dup_real": "3 real + duplicated real (count-matched)",
    "synthetic": "4 real + synthetic (unfiltered)",
    "synthetic_filtered": "5 real + synthetic (CLIP/MoSo-filtered)",
}

ARM_DEFINITIONS = {
    "real": "real train images, standard augmentation (flip, ±10° rotation, zoom crop, "
    "brightness/contrast ±10%)",
    "classic_aug": "the same real images with strong classic augmentation instead (±25° "
    "rotation, zoom 0.7–1.15, ±25% brightness/contrast, gamma, speckle noise, blur); no "
    "extra images",
    "dup_real": "real + duplicated real train images, exactly as many per class as arms 4/5 "
    "add synthetic ones",
    "synthetic": "real + synthetic images drawn at random from the unfiltered manifest",
    "synthetic_filtered": "real + the same number of synthetic images from the filtered "
    "manifest's kept rows",
}


def describe_arms(arms: tuple[str, ...] | list[str] = tuple(ARM_DEFINITIONS)) -> str:
    lines = [f"- {ARM_TITLES[arm]}: {ARM_DEFINITIONS[arm]}" for arm in arms]
    lines.append("Validation and test sets are real images only, identical in every arm.")
    return "\n".join(lines)
