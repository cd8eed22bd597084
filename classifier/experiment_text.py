"""Human-readable arm names and definitions, shared by the report and the CLI help."""

ARM_TITLES = {
    "real": "1 real only",
    "classic_aug": "2 real + classic augmentation",
    "dup_real": "3 real + duplicated real (count-matched)",
    "synthetic": "4 real + synthetic (unfiltered)",
    "synthetic_filtered": "5 real + synthetic (CLIP/MoSo-filtered)",
    "mixup": "6 real + mixup (the paper's 'mixing images')",
    "filter_clip_only": "7 real + synthetic (CLIP filter only, no MoSo)",
    "coarse_only": "8 real + coarse model alone (no FG/BG branches), filtered",
    "synthetic_pretrain": "9 pretrain on 5's set, fine-tune on real only",
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
    "mixup": "real train images, standard augmentation, each batch blended with a shuffled copy "
    "of itself (mixup, Beta(0.4, 0.4) by default: mix.mixup_alpha)",
    "filter_clip_only": "as arm 5, from the same filter run with MoSo off: what MoSo adds",
    "coarse_only": "as arm 5, images from the coarse text-to-image model alone (the fine "
    "stage's FG/BG conditioning scales set to 0), filtered the same way",
    "synthetic_pretrain": "trained on arm 5's set, then fine-tuned on the real train images "
    "only from that model (RoentGen-v2's recipe)",
}


def describe_arms(arms: tuple[str, ...] | list[str] = tuple(ARM_DEFINITIONS)) -> str:
    lines = [f"- {ARM_TITLES[arm]}: {ARM_DEFINITIONS[arm]}" for arm in arms]
    lines.append("Validation and test sets are real images only, identical in every arm.")
    return "\n".join(lines)
