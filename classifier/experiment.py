"""The five-arm experiment on one subtype: same splits, several seeds, paired comparisons.

Arms (every arm: same real train/valid/test images, model, schedule and imbalance handling):
  real                real train images, standard augmentation.
  classic_aug         real train images, strong classic augmentation (see augment.py) instead
                      of the standard one: what hand-made augmentation alone buys.
  dup_real            real + duplicated real train images, exactly as many per class as the
                      synthetic arm adds: tells whether synthetic images carry anything beyond
                      re-weighting / longer epochs.
  synthetic           real + synthetic images drawn from the unfiltered manifest.
  synthetic_filtered  real + the same number of synthetic images drawn from the filtered
                      manifest's kept rows (CLIP/MoSo).
Arms that isolate each part of the method (same counts, seeds and selection on validation):
  mixup               real train images with mixup (the paper's "mixing images" baseline).
  filter_clip_only    as synthetic_filtered, the filter run with MoSo off: MoSo's contribution.
  coarse_only         as synthetic_filtered, images from the coarse text-to-image model alone
                      (no FG/BG branches; the paper's plain Stable Diffusion baseline).
  synthetic_pretrain  RoentGen-v2's recipe: train on synthetic_filtered's set, then fine-tune on
                      the real train images only, starting from that model.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from classifier.config import ALL_ARMS, ExperimentConfig
from classifier.data import ImageCache
from classifier.evaluate import (
    EXTERNAL_SPLIT,
    METRICS_FILE,
    PREDICTIONS_FILE,
    evaluate_run,
    external_metrics,
    load_for_scoring,
    score_split,
)
from classifier.layout import (
    ImageItem,
    LayoutError,
    assert_real_only,
    class_counts,
    read_layout,
)
from classifier.metrics import (
    auc,
    bootstrap_indices,
    difference_from_aucs,
    estimate_from_aucs,
    mean_auc,
    seed_aucs,
)
from classifier.mixing import (
    add_to_train,
    duplicate_real,
    manifest_is_stand_in,
    matched_counts,
    read_manifest,
    select,
)
from classifier.train import BEST_DIR, make_accelerator, train_classifier
from generation.offline import enforce_offline
from metadata.atomic import write_json

# Arms that add synthetic images from a manifest, and the manifest each reads.
SYNTHETIC_ARMS = ("synthetic", "synthetic_filtered", "filter_clip_only", "coarse_only")
PRETRAIN_DIR = "pretrain"
METRIC_KEYS = ("sensitivity", "specificity", "ppv", "npv", "f1", "accuracy")


def manifest_paths(*fields: str | list[str]) -> list[str]:
    """The manifests named by MixConfig fields (each one path or a list; empty: none)."""
    return [
        path for field in fields for path in ([field] if isinstance(field, str) else field) if path
    ]


def load_pools(config: ExperimentConfig) -> dict[str, list[ImageItem]]:
    """Synthetic candidates per synthetic arm present in the config (train split only)."""
    pools = {}
    sources = {
        "synthetic": (config.mix.unfiltered_manifest, False),
        "synthetic_filtered": (config.mix.filtered_manifest, True),
        "filter_clip_only": (config.mix.clip_only_manifest, True),
        "coarse_only": (config.mix.coarse_only_manifest, True),
    }
    wanted = {"synthetic_filtered" if arm == "synthetic_pretrain" else arm for arm in config.arms}
    for arm in sorted(wanted):
        if arm in sources:
            manifest, require_kept = sources[arm]
            if not manifest:
                raise ValueError(f"arm {arm!r} needs a manifest (mix.{arm} manifest is empty)")
            pools[arm] = [
                item
                for path in manifest_paths(manifest)
                for item in read_manifest(
                    path, config.data.subtype, require_kept, config.data.croot
                )
            ]
    return pools


def extra_counts(
    config: ExperimentConfig, real_train: list[ImageItem], pools: dict[str, list[ImageItem]]
) -> dict[int, int]:
    """Per-class number of added images, shared by dup_real and both synthetic arms."""
    if not pools:
        if "dup_real" in config.arms and config.mix.per_class_count < 0:
            raise ValueError("arm 'dup_real' needs a synthetic arm or mix.per_class_count >= 0")
        pools_list: list[list[ImageItem]] = []
    else:
        pools_list = list(pools.values())
    return matched_counts(
        real_train, pools_list, config.mix.classes, config.mix.ratio, config.mix.per_class_count
    )


def arm_training_set(
    arm: str,
    real_train: list[ImageItem],
    pools: dict[str, list[ImageItem]],
    counts: dict[int, int],
    seed: int,
) -> tuple[list[ImageItem], str]:
    """(train items, augmentation policy) of one arm and seed; for synthetic_pretrain, the
    pretraining set (its fine-tuning set is the real train images)."""
    if arm in ("real", "mixup"):
        return list(real_train), "standard"
    if arm == "classic_aug":
        return list(real_train), "strong"
    if arm == "dup_real":
        return add_to_train(real_train, duplicate_real(real_train, counts, seed)), "standard"
    if arm in SYNTHETIC_ARMS:
        return add_to_train(real_train, select(pools[arm], counts, seed)), "standard"
    if arm == "synthetic_pretrain":
        pool = pools["synthetic_filtered"]
        return add_to_train(real_train, select(pool, counts, seed)), "standard"
    raise ValueError(f"unknown arm {arm!r} (choose from {ALL_ARMS})")


def composition(items: list[ImageItem]) -> dict[str, int]:
    counter = Counter(f"{item.origin}_{item.label}" for item in items)
    return dict(sorted(counter.items()))


def read_external(config: ExperimentConfig, layout: dict[str, list[ImageItem]]) -> list[ImageItem]:
    """The independent test set's images of this subtype (none without `external_croot`);
    refused when it shares a case with the split, or holds anything but real images."""
    if not config.data.external_croot:
        return []
    external = read_layout(config.data.external_croot, config.data.subtype, ("test",))["test"]
    assert_real_only(external, "test")
    own = {item.case_id for items in layout.values() for item in items}
    shared = sorted({item.case_id for item in external} & own)
    if shared:
        raise LayoutError(
            config.data.external_croot,
            f"independent test set shares {len(shared)} case(s) with {config.data.croot}, "
            f"e.g. {shared[0]!r}: it must be case-disjoint",
        )
    return external


def add_external_scores(
    config: ExperimentConfig, run_dir: Path, external: list[ImageItem], cache: ImageCache
) -> dict:
    """Score a finished run's selected model on the independent test set (a run made before
    the set was asked for), adding it to predictions.json and metrics.json."""
    predictions = json.loads((run_dir / PREDICTIONS_FILE).read_text())
    metrics = json.loads((run_dir / METRICS_FILE).read_text())
    accelerator = make_accelerator(config.train)
    model = load_for_scoring(run_dir / BEST_DIR, accelerator)
    batch = config.train.eval_batch_size
    predictions[EXTERNAL_SPLIT] = score_split(model, external, cache, accelerator, batch)
    metrics[EXTERNAL_SPLIT] = external_metrics(predictions, config.eval, metrics["threshold"])
    write_json(run_dir / PREDICTIONS_FILE, predictions)
    write_json(run_dir / METRICS_FILE, metrics)
    return metrics


def run_one(
    config: ExperimentConfig,
    arm: str,
    seed: int,
    train_items: list[ImageItem],
    augmentation: str,
    valid: list[ImageItem],
    test: list[ImageItem],
    run_dir: Path,
    cache: ImageCache,
    external: list[ImageItem] | None = None,
) -> dict:
    """Train (resuming if interrupted) and evaluate one arm/seed; cached once finished."""
    metrics_file = run_dir / METRICS_FILE
    if metrics_file.is_file() and (run_dir / PREDICTIONS_FILE).is_file():
        metrics = json.loads(metrics_file.read_text())
        if external and EXTERNAL_SPLIT not in metrics:
            metrics = add_external_scores(config, run_dir, external, cache)
        return metrics
    mixup_alpha = config.mix.mixup_alpha if arm == "mixup" else config.train.mixup_alpha
    train_config = replace(
        config.train, seed=seed, augmentation=augmentation, mixup_alpha=mixup_alpha
    )
    accelerator = make_accelerator(train_config)
    model_config = config.model
    if arm == "synthetic_pretrain":  # phase 1 on real + synthetic, phase 2 on real only
        pretrain_dir = run_dir / PRETRAIN_DIR
        write_json(pretrain_dir / "composition.json", composition(train_items))
        train_classifier(
            train_items, valid, pretrain_dir, config.model, train_config, config.data, cache,
            accelerator,
        )  # fmt: skip
        model_config = replace(
            config.model, weights=str(pretrain_dir / BEST_DIR / "model.safetensors")
        )
        train_items = [item for item in train_items if item.origin == "real"]
    write_json(run_dir / "composition.json", composition(train_items))
    state = train_classifier(
        train_items, valid, run_dir, model_config, train_config, config.data, cache, accelerator
    )
    metrics = evaluate_run(
        run_dir / BEST_DIR,
        valid,
        test,
        run_dir,
        config.eval,
        config.data,
        cache,
        accelerator,
        config.train.eval_batch_size,
        external,
    )
    metrics.update(best_epoch=state.best_epoch, best_val_auc=state.best_val_auc, arm=arm, seed=seed)
    write_json(metrics_file, metrics)
    return metrics


AucMatrices = dict[tuple[str, str, tuple[int, ...]], np.ndarray]


def summarize(
    config: ExperimentConfig,
    runs: dict[str, dict[int, dict]],
    root: Path,
    split: str = "test",
    folders: dict[str, str] | None = None,
    matrices: AucMatrices | None = None,
) -> dict:
    """Per-arm seed-mean AUC with a bootstrap CI over test cases and seeds, and the paired
    difference to the real-only arm, on the split's test set or (split="external") on the
    independent test set. `folders` names the folder of a run that another run name reuses (a
    ratio arm identical to a main arm). Each run's [resample, seed] AUC matrix is computed once
    and kept in `matrices` (keyed by split, folder and seeds), so a control that every arm is
    paired with, or that several calls share, is scored once."""
    folders = folders or {}
    matrices = {} if matrices is None else matrices
    scores, labels, groups = {}, None, None
    for arm, by_seed in runs.items():
        rows = []
        for seed in sorted(by_seed):
            folder = root / folders.get(arm, arm) / f"seed_{seed}"
            predictions = json.loads((folder / PREDICTIONS_FILE).read_text())
            test = predictions[split]
            if labels is not None and test["labels"] != labels.tolist():
                raise ValueError(f"{arm}/seed_{seed}: {split} set differs between runs")
            labels, groups = np.array(test["labels"]), np.array(test["case_ids"])
            rows.append(test["scores"])
        scores[arm] = np.array(rows)
    resamples: list[np.ndarray] = []

    def matrix(arm: str) -> np.ndarray:
        key = (split, folders.get(arm, arm), tuple(sorted(runs[arm])))
        if key not in matrices:
            if not resamples:
                resamples.extend(
                    bootstrap_indices(labels, config.eval.n_bootstrap, config.eval.seed, groups)
                )
            matrices[key] = seed_aucs(labels, scores[arm], resamples)
        return matrices[key]

    summary = {}
    reference = "real" if "real" in scores else ""
    for arm, by_seed in runs.items():
        per_seed_auc = [auc(labels, row) for row in scores[arm]]
        estimate = estimate_from_aucs(
            float(np.mean(per_seed_auc)),
            matrix(arm),
            config.eval.ci,
            config.eval.seed,
            resample_seeds=True,
        )
        row = {
            "auc": estimate.value,
            "auc_low": estimate.low,
            "auc_high": estimate.high,
            "auc_sd_over_seeds": (
                float(np.std(per_seed_auc, ddof=1)) if len(per_seed_auc) > 1 else 0.0
            ),
            "seed_aucs": per_seed_auc,
            "n_seeds": len(per_seed_auc),
        }
        for key in METRIC_KEYS:  # nan (e.g. PPV with no positive call) is left out of the mean
            per_seed = [by_seed[s] if split == "test" else by_seed[s][split] for s in by_seed]
            values = np.array([m[key] for m in per_seed], dtype=float)
            values = values[np.isfinite(values)]
            row[key] = float(values.mean()) if len(values) else float("nan")
            row[f"{key}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        # Paired against real only ("delta_*") and against the count-matched duplicated-real
        # control ("dup_delta_*"): a synthetic arm must beat the second to carry anything.
        for prefix, control in (("delta", reference), ("dup_delta", "dup_real")):
            skip = {control, reference} if prefix == "dup_delta" else {control}
            if control not in scores or arm in skip:
                continue
            difference = difference_from_aucs(
                mean_auc(labels, scores[arm]) - mean_auc(labels, scores[control]),
                matrix(arm),
                matrix(control),
                config.eval.ci,
                config.eval.seed,
                resample_seeds=True,
            )
            row.update(
                {
                    f"{prefix}_auc": difference.value,
                    f"{prefix}_low": difference.low,
                    f"{prefix}_high": difference.high,
                    f"{prefix}_p": difference.p_value,
                }
            )
        summary[arm] = row
    return {"arms": summary, "scores": {a: s.tolist() for a, s in scores.items()}}


RATIO_ARMS = ("dup_real", "synthetic_filtered")


def ratio_plan(
    config: ExperimentConfig,
    real_train: list[ImageItem],
    pools: dict[str, list[ImageItem]],
    main_counts: dict[int, int],
) -> dict[float, tuple[dict[int, int], bool]]:
    """Per ratio of the curve: the per-class counts (capped by the filtered pool) and whether
    they equal the main arms' counts, in which case the ratio's rows reuse the main runs (the
    same images and seeds would train the same model again)."""
    plan = {}
    for ratio in config.ratios:
        counts = matched_counts(
            real_train, [pools["synthetic_filtered"]], config.mix.classes, ratio, -1
        )
        plan[ratio] = (counts, counts == main_counts)
    return plan


def real_train_and_pools(
    config: ExperimentConfig,
) -> tuple[dict[str, list[ImageItem]], list[ImageItem], dict[str, list[ImageItem]]]:
    """The layout, its real train images and the synthetic pools: what every arm draws from.
    Synthetic rows the exporter placed in train/ are left out: synthetic images enter the arms
    only through the manifests, count-controlled."""
    layout = read_layout(config.data.croot, config.data.subtype)
    real_train = [item for item in layout["train"] if item.origin == "real"]
    return layout, real_train, load_pools(config)


def ratio_curve(
    config: ExperimentConfig,
    real_train: list[ImageItem],
    pools: dict[str, list[ImageItem]],
    valid: list[ImageItem],
    test: list[ImageItem],
    root: Path,
    cache: ImageCache,
    main_runs: dict[str, dict[int, dict]],
    main_counts: dict[int, int],
    external: list[ImageItem] | None = None,
) -> list[dict]:
    """ΔAUC vs real only of the duplicated-real control and the filtered synthetic arm at each
    synthetic-to-real ratio (counts capped by the pool: `count` says what was reached); with an
    independent test set, the same on it (`external_*`). A ratio whose counts equal the main
    arms' reuses those runs: the same images and seeds would train the same model again."""
    real_runs = main_runs["real"]  # run_experiment checked the curve's arms before training
    rows = []
    real_counts = class_counts(real_train)
    matrices: AucMatrices = {}
    for ratio, (counts, reuses_main) in ratio_plan(config, real_train, pools, main_counts).items():
        runs: dict[str, dict[int, dict]] = {"real": real_runs}
        folders: dict[str, str] = {}
        for arm in RATIO_ARMS:
            name = f"ratio_{ratio:g}/{arm}"
            if reuses_main and set(config.seeds) <= set(main_runs.get(arm, {})):
                runs[name], folders[name] = main_runs[arm], arm
                continue
            runs[name] = {}
            for seed in config.seeds:
                items, augmentation = arm_training_set(arm, real_train, pools, counts, seed)
                folder = root / name / f"seed_{seed}"
                runs[name][seed] = run_one(
                    config, arm, seed, items, augmentation, valid, test, folder, cache, external
                )
        summary = summarize(config, runs, root, folders=folders, matrices=matrices)["arms"]
        on_external = (
            summarize(config, runs, root, EXTERNAL_SPLIT, folders, matrices)["arms"]
            if external
            else {}
        )
        for arm in RATIO_ARMS:
            name = f"ratio_{ratio:g}/{arm}"
            row = summary[name]
            rows.append(
                {
                    "ratio": ratio,
                    "arm": arm,
                    "count": {str(c): n for c, n in counts.items()},
                    "runs": folders.get(name, name),
                    "ratio_reached": {
                        str(c): round(n / max(real_counts.get(c, 0), 1), 3)
                        for c, n in counts.items()
                    },
                    **{key: row[key] for key in ("auc", "delta_auc", "delta_low", "delta_high")},
                    "delta_p": row["delta_p"],
                    **{
                        f"external_{key}": on_external[name][key]
                        for key in ("auc", "delta_auc", "delta_low", "delta_high", "delta_p")
                        if on_external
                    },
                }
            )
    return rows


def run_experiment(config: ExperimentConfig) -> dict:
    """All arms × seeds for `config.data.subtype`; results.json + report in the run folder."""
    from classifier.report import write_report

    root = Path(config.run_dir) / config.data.subtype
    enforce_offline(config.run_dir)
    unknown = set(config.arms) - set(ALL_ARMS)
    if unknown:
        raise ValueError(f"unknown arm(s) {sorted(unknown)} (choose from {ALL_ARMS})")
    layout, real_train, pools = real_train_and_pools(config)
    if config.ratios and ("real" not in config.arms or "synthetic_filtered" not in pools):
        # said before any training, not after the main arms' hours
        raise ValueError("the ratio curve needs the 'real' and 'synthetic_filtered' arms")
    valid, test = layout["valid"], layout["test"]
    assert_real_only(valid, "valid")
    assert_real_only(test, "test")
    counts = extra_counts(config, real_train, pools)
    setup = {
        "config": asdict(config),
        "real_counts": {split: class_counts(items) for split, items in layout.items()},
        "extra_per_class": counts,
        "pool_sizes": {arm: class_counts(pool) for arm, pool in pools.items()},
        "stand_in_manifests": [
            str(m)
            for m in manifest_paths(config.mix.unfiltered_manifest, config.mix.filtered_manifest)
            if manifest_is_stand_in(m)
        ],
        "extra_count_source": "matched to the synthetic arms"
        if pools
        else "set explicitly (mix.per_class_count); no synthetic arm in this run",
    }
    external = read_external(config, layout)
    if external:
        setup["external_counts"] = class_counts(external)
        setup["external_croot"] = config.data.external_croot
    write_json(root / "experiment.json", setup)
    cache = ImageCache(config.data.image_size)
    runs: dict[str, dict[int, dict]] = {arm: {} for arm in config.arms}
    for seed in config.seeds:
        for arm in config.arms:
            train_items, augmentation = arm_training_set(arm, real_train, pools, counts, seed)
            runs[arm][seed] = run_one(
                config,
                arm,
                seed,
                train_items,
                augmentation,
                valid,
                test,
                root / arm / f"seed_{seed}",
                cache,
                external,
            )
    results = {"setup": setup, "runs": runs, **summarize(config, runs, root)}
    if external:
        results[EXTERNAL_SPLIT] = summarize(config, runs, root, EXTERNAL_SPLIT)["arms"]
    if config.ratios:
        results["ratio_curve"] = ratio_curve(
            config, real_train, pools, valid, test, root, cache, runs, counts, external
        )
    write_json(root / "results.json", results)
    write_report(root, results, layout, pools, counts)
    return results
