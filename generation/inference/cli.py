"""`python -m generation.inference.cli {diversify,reference} --model FINE --dataset DATA --out GEN`.

    # 200 follicular images from prompts drawn like the real FTC statistics, pushed to novelty
    python -m generation.inference.cli diversify --model runs/fine --dataset data/phantom \\
        --out runs/gen_ftc --label FTC --num-images 200 --novelty-candidates 4 \\
        --fix echogenicity=hypoechoic --exclude margins=spiculated
    # img2img variations of every train-split FTC image, background from the bank
    python -m generation.inference.cli reference --model runs/fine --dataset data/phantom \\
        --out runs/ref_ftc --label FTC --num-images 200 --strength 0.6 --background bank

    # attribute agreement and memorization of a generated folder
    python -m generation.inference.cli evaluate --gen runs/gen_ftc --dataset data/phantom
    # does each image follow its conditions? FG IoU (segmenter) and BG mean -> GEN/control.json
    python -m generation.inference.cli control --gen runs/gen_ftc --dataset data/phantom

Re-running the same command resumes. Several GPUs: `accelerate launch -m
generation.inference.cli diversify ...` (the jobs are split across processes).
"""

from __future__ import annotations

import argparse
import logging
import sys

from generation.inference.attributes import AttributeConstraints, AttributeSpecError
from generation.inference.control import ControlConfig, measure_control
from generation.inference.engine import (
    ATTENTION,
    DIVERSIFY_BACKGROUND_OUTSIDE_NODULE,
    PRECISIONS,
    SAMPLERS,
    GenerationError,
    RuntimeConfig,
    SamplingConfig,
)
from generation.inference.masks import MASK_SOURCES, MaskBankConfig
from generation.inference.plan import (
    BACKGROUND_MATCHES,
    BRANCH_CHOICES,
    DEFAULT_BACKGROUND_MATCH,
)
from generation.inference.prompts import STRATEGIES, SUPPORT_SCOPES, PromptConfig
from generation.inference.runner import GenerationRequest, run_generation
from generation.training.options import parse_bool
from metadata.records import MetadataError


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="fine-stage folder (generation.fine)")
    parser.add_argument("--dataset", required=True, help="Tiger dataset folder (real images)")
    parser.add_argument("--out", required=True, help="output folder GEN (resumable)")
    parser.add_argument("--label", required=True, help="subtype to generate, e.g. FTC or MTC")
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--splits",
        default=None,
        help="classifier splits.json: sources come from its train cases only (required unless "
        "--dataset is a train-only subset from `metadata.cli subset`)",
    )
    parser.add_argument("--fix", nargs="*", default=[], metavar="NAME=VALUE[,VALUE]")
    parser.add_argument("--mask-source", choices=MASK_SOURCES, default="mixed")
    parser.add_argument("--max-rotation", type=float, default=20.0, help="mask bank, degrees")
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--scheduler", choices=SAMPLERS, default="dpm++")
    sampling.add_argument("--steps", type=int, default=25)
    sampling.add_argument("--guidance-scale", type=float, default=4.0)
    sampling.add_argument("--conditioning-scale", type=float, nargs=2, default=[1.0, 1.0],
                          metavar=("FG", "BG"))  # fmt: skip
    sampling.add_argument("--negative-prompt", default="")
    sampling.add_argument(
        "--attribute-contrast",
        type=parse_bool,
        nargs="?",
        const=True,
        default=False,
        help="guide against the same prompt with the nodule findings flipped, not the empty one",
    )
    sampling.add_argument(
        "--background-outside-nodule",
        type=parse_bool,
        nargs="?",
        const=True,
        default=False,
        help="the background branch acts outside the nodule mask only (the nodule's look comes "
        "from the FG branch and the text); default: on in diversify mode, off in reference mode",
    )
    sampling.add_argument("--resolution", type=int, default=None)
    runtime = parser.add_argument_group("runtime")
    runtime.add_argument("--batch-size", type=int, default=8)
    runtime.add_argument("--precision", choices=PRECISIONS, default="auto")
    runtime.add_argument("--attention", choices=ATTENTION, default="sdpa")
    runtime.add_argument("--cpu-threads", type=int, default=None)
    runtime.add_argument("--device", default=None, help="default: accelerate's device")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m generation.inference.cli",
        description="Generate rare-subtype images with the fine-stage model (resumable).",
    )
    modes = parser.add_subparsers(dest="mode", required=True)
    diversify = modes.add_parser("diversify", help="text-driven: prompts from the vocabulary")
    common_arguments(diversify)
    diversify.set_defaults(background_outside_nodule=DIVERSIFY_BACKGROUND_OUTSIDE_NODULE)
    diversify.add_argument("--exclude", nargs="*", default=[], metavar="NAME=VALUE[,VALUE]")
    diversify.add_argument("--strategy", choices=STRATEGIES, default="sample")
    diversify.add_argument("--support", choices=SUPPORT_SCOPES, default="subtype")
    diversify.add_argument("--diversity", type=float, default=0.0, help="0 data, 1 uniform")
    diversify.add_argument("--novelty-candidates", type=int, default=1)
    diversify.add_argument(
        "--background-match",
        choices=BACKGROUND_MATCHES,
        default=DEFAULT_BACKGROUND_MATCH,
        help="findings (default): the background map comes from a train frame whose nodule had "
        "the prompt's calcifications/composition (their shadow or enhancement), the mask where "
        "that nodule was; any: any train frame, the mask anywhere",
    )
    reference = modes.add_parser("reference", help="image-driven: img2img from train images")
    common_arguments(reference)
    reference.add_argument("--references", nargs="*", default=None, help="file names or stems")
    reference.add_argument("--strength", type=float, default=0.6)
    reference.add_argument("--foreground", choices=BRANCH_CHOICES, default="keep")
    reference.add_argument("--background", choices=BRANCH_CHOICES, default="keep")
    evaluate = modes.add_parser("evaluate", help="attribute agreement + memorization of GEN")
    evaluate.add_argument("--gen", required=True, help="a generated folder (manifest.jsonl)")
    evaluate.add_argument("--dataset", required=True, help="the real dataset it drew on")
    evaluate.add_argument("--splits", default=None, help="classifier splits.json")
    evaluate.add_argument("--report", default=None, help="default: GEN/evaluation.json")
    control = modes.add_parser("control", help="FG IoU (segmenter) + BG agreement of GEN")
    control.add_argument("--gen", required=True, help="a generated folder (manifest.jsonl)")
    control.add_argument("--dataset", required=True, help="the real dataset it drew on")
    control.add_argument("--splits", default=None, help="classifier splits.json (train/valid)")
    control.add_argument("--epochs", type=int, default=ControlConfig.epochs)
    control.add_argument("--image-size", type=int, default=ControlConfig.image_size)
    control.add_argument("--seed", type=int, default=ControlConfig.seed)
    control.add_argument("--cpu-threads", type=int, default=None)
    control.add_argument("--report", default=None, help="default: GEN/control.json")
    control.add_argument(
        "--segmenter-cache",
        default=None,
        help="folder keeping the fitted segmenter, keyed by its train frames and config",
    )
    return parser


def control_command(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    try:
        config = ControlConfig(
            image_size=args.image_size, epochs=args.epochs, seed=args.seed
        ).validate()
    except ValueError as error:
        raise GenerationError(str(error)) from None
    report_file = args.report or str(Path(args.gen) / "control.json")
    report = measure_control(
        args.gen, args.dataset, args.splits, None, config, report_file, args.segmenter_cache
    )
    keys = ("fg_iou", "fg_iou_shuffled_masks", "segmenter_real_held_out_iou", "bg")
    print(json.dumps({k: report[k] for k in keys}, indent=1))
    print(f"full report: {report_file}")
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from generation.inference.evaluate import evaluate_generation

    report_file = args.report or str(Path(args.gen) / "evaluation.json")
    report = evaluate_generation(args.gen, args.dataset, args.splits, report_file)
    print(json.dumps({k: report[k] for k in ("agreement", "memorization")}, indent=1))
    print(f"full report: {report_file}")
    return 0


def request_from_args(args: argparse.Namespace) -> GenerationRequest:
    diversify = args.mode == "diversify"
    constraints = AttributeConstraints.from_cli(args.fix, args.exclude if diversify else [])
    sampling = SamplingConfig(
        scheduler=args.scheduler,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        conditioning_scale=tuple(args.conditioning_scale),
        strength=args.strength if not diversify else SamplingConfig.strength,
        negative_prompt=args.negative_prompt,
        attribute_contrast=args.attribute_contrast,
        background_outside_nodule=args.background_outside_nodule,
        resolution=args.resolution,
    )
    runtime = RuntimeConfig(
        batch_size=args.batch_size,
        precision=args.precision,
        attention=args.attention,
        cpu_threads=args.cpu_threads,
        device=args.device,
    )
    request = GenerationRequest(
        mode=args.mode,
        model=args.model,
        dataset=args.dataset,
        out_dir=args.out,
        label=args.label,
        num_images=args.num_images,
        seed=args.seed,
        splits_file=args.splits,
        constraints=constraints,
        masks=MaskBankConfig(source=args.mask_source, max_rotation_deg=args.max_rotation),
        sampling=sampling,
        runtime=runtime,
    )
    if diversify:
        request.prompts = PromptConfig(
            strategy=args.strategy,
            support=args.support,
            diversity=args.diversity,
            novelty_candidates=args.novelty_candidates,
        ).validate()
        request.background_match = args.background_match
    else:
        request.references = args.references
        request.foreground = args.foreground
        request.background = args.background
    return request.validate()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.mode == "evaluate":
            return evaluate_command(args)
        if args.mode == "control":
            return control_command(args)
        request = request_from_args(args)
        summary = run_generation(request)
    except (AttributeSpecError, GenerationError, MetadataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"{request.out_dir}: {summary['generated']} generated, {summary['skipped']} already "
        f"done, {summary['manifest_rows']} rows in manifest.jsonl"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
