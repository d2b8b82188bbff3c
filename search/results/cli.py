"""The commands that come after a search: promote, evaluate, predict, report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from search.args import int_at_least, store_arguments, study_from_store, study_name
from trainers.rundir import CHECKPOINT_EVERY, CHECKPOINT_MINUTES


def add_result_commands(sub: argparse._SubParsersAction) -> None:
    """promote, evaluate, predict, report: what comes after the search."""
    promote = sub.add_parser(
        "promote", help="train a trial in full (the study's [final] recipe, 200 epochs)",
        description="Rebuild trial TRIAL's architecture and recipe from the store, apply the "
        "study file's [final] recipe and train it, with checkpoints, into "
        "runs/STUDY/trial-TRIAL/ (config.json, checkpoint.pt, model.pt, metrics.csv, "
        "curves.png, confusion.png, summary.json). The same command after a crash resumes; "
        "the test accuracy is written back to the trial as promoted_test_acc.",
    )
    promote.add_argument("trial", type=int_at_least(0), metavar="TRIAL", help="trial number")
    promote.add_argument("--study", default="resnet-budget", help="built-in name or study file")
    promote.add_argument("--storage", metavar="URL", help="store URL (as for run)")
    promote.add_argument("--study-name", type=study_name,
                         help="name in the store (default: the study file's)")
    promote.add_argument("--epochs", type=int_at_least(1),
                         help="epochs (default: the study file's [final] epochs)")
    promote.add_argument("--data", metavar="PATH", help="CIFAR-10 data (as for run)")
    promote.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda if present")
    promote.add_argument("--ray-address", metavar="ADDR",
                         help="train as a Ray task on this cluster ('local' starts one)")
    promote.add_argument("--restart", action="store_true",
                         help="discard the run folder's checkpoint and train from scratch")
    promote.add_argument("--out", metavar="DIR", help="run folder (default: runs/STUDY/trial-N)")
    promote.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                         help="torch.compile the training step (default: on with CUDA; "
                         "the first epoch then includes about a minute of compiling)")
    promote.add_argument("--checkpoint-every", type=int_at_least(1), default=CHECKPOINT_EVERY,
                         metavar="N", help="checkpoint at least every N epochs "
                         "(default: %(default)s)")
    promote.add_argument("--checkpoint-minutes", type=minutes, default=CHECKPOINT_MINUTES,
                         metavar="M", help="... and after an epoch ending M minutes or more "
                         "after the last checkpoint (default: %(default)s), so a crash loses "
                         "at most about M minutes plus an epoch")
    promote.add_argument("--artifacts", metavar="DIR_OR_URL",
                         help="Optuna artifact store for the run's files (a folder, s3://BUCKET "
                         "or gs://BUCKET; default: the study's, else artifacts/ beside an "
                         "SQLite store or runs/STUDY/artifacts)")
    promote.add_argument("--tensorboard", metavar="DIR",
                         help="write TensorBoard event files to DIR/STUDY/final-RUN "
                         "(per-epoch scalars, hyperparameters and the test accuracy)")
    promote.add_argument("--fold", type=fold_text, metavar="k/K",
                         help="train on the training images minus fold k of K (stratified, "
                         "fixed), validate on fold k; K runs form a fold ensemble")
    kd = promote.add_argument_group(
        "distillation", "Train the trial's network to match trained runs (the teachers, any "
        "size) as well as the labels: alpha * T^2 * KL(teachers_T || student_T) + "
        "(1 - alpha) * cross-entropy.")
    kd.add_argument("--teacher", action="append", default=[], metavar="RUN",
                    help="a teacher's run folder (repeat for an ensemble of teachers)")
    kd.add_argument("--teacher-weights", metavar="W1,W2,...",
                    help="each teacher's weight in their mean (default: equal)")
    kd.add_argument("--kd-temperature", type=float, metavar="T",
                    help="softmax temperature (default: the recipe's kd_temperature, 4)")
    kd.add_argument("--kd-alpha", type=float, metavar="A",
                    help="weight of the teachers' term (default: the recipe's kd_alpha, 0.9)")
    kd.add_argument("--teacher-cache", action="store_true",
                    help="compute the teachers' outputs once, for the un-augmented training "
                    "images, instead of on every augmented batch (not with mixup, CutMix or "
                    "RICAP)")
    promote.set_defaults(func=cmd_promote)

    evaluate = _model_command(
        sub, "evaluate", cmd_evaluate, "test accuracy, per class, and a confusion matrix PNG",
        "Evaluate a run folder, its model.pt or a checkpoint on a data set's test split: "
        "accuracy, per-class accuracy, and confusion.png plus evaluation.json in --out. "
        "Several: each one's accuracy and their ensemble's (in runs/ensembles/DIGEST/ "
        "unless --out), with the ensemble's parameters against the budget.")
    evaluate.add_argument("--data", metavar="PATH",
                          help="labelled CIFAR-10 data (default: the run's own data set)")
    evaluate.add_argument("--out", metavar="DIR",
                          help="where the PNG and JSON go (default: RUN/eval-DATANAME)")
    predict = _model_command(
        sub, "predict", cmd_predict, "predict labels for unlabelled images as ID,Labels CSV",
        "Predict the classes of unlabelled images: a pickle dict with b'data' "
        "(N x 32 x 32 x 3 uint8) and b'ids', or a folder of 32x32 images (ids: file names). "
        "Several models: the labels of their ensemble.")
    predict.add_argument("--input", required=True, metavar="FILE",
                         help="course-format pickle or image folder")
    predict.add_argument("--out", default="submission.csv", metavar="CSV",
                         help="output CSV (default: %(default)s)")
    predict.add_argument("--attach", action="store_true",
                         help="also attach the CSV to the run's trial in its study's artifact "
                         "store (the dashboard lists it on the trial); one run only")
    predict.add_argument("--storage", metavar="URL",
                         help="--attach: the study's store, where the run's config.json has "
                         "it with the password masked")
    predict.add_argument("--artifacts", metavar="DIR_OR_URL",
                         help="--attach: the artifact store (default: the study's)")

    from search.args import float_in
    from search.results.export import EXTRA, FORMATS, TOLERANCE

    export = sub.add_parser(
        "export", help="write a run's network as a TorchScript, ONNX or safetensors file",
        description="Write the network that evaluate evaluates (a run folder's model.pt, or a "
        "checkpoint's weights), in eval mode, as one file: TorchScript (torch.jit.trace), ONNX "
        "(input 'images' with a dynamic batch axis, output 'logits') or safetensors (the "
        "state_dict). Its input is float32 N x 3 x 32 x 32 RGB, normalised as in training "
        "(trainers.augment.normalize: (pixel / 255 - mean) / std per channel, CIFAR-10's "
        "mean and std); its output the logits, without the recipe's test-time flips. The "
        "file's metadata (ONNX metadata_props, TorchScript extra file metadata.json, "
        "safetensors header) holds both configs, the parameter count, the normalisation, the "
        "class names and the code version. The file is read back and its logits compared "
        "with PyTorch's on test images before it is written; over --tolerance nothing is "
        f"written (exit code 2). ONNX and safetensors need the export extra: {EXTRA}.")
    export.add_argument("run", metavar="RUN",
                        help="run folder, its model.pt (config.json beside it) or checkpoint.pt")
    export.add_argument("--format", required=True, choices=FORMATS, help="the file's format")
    export.add_argument("--out", required=True, metavar="FILE",
                        help="the file to write (missing folders are made)")
    export.add_argument("--data", metavar="PATH",
                        help="labelled CIFAR-10 data whose test images check the export "
                        "(default: the run's own data set)")
    export.add_argument("--tolerance", type=float_in(0.0, 1.0), default=TOLERANCE, metavar="T",
                        help="largest absolute logit difference from PyTorch's that passes "
                        "the check (default: %(default)g)")
    export.set_defaults(func=cmd_export)

    report = sub.add_parser(
        "report", help="Pareto plot and a table of the top trials",
        description="Plot validation accuracy against parameters (pareto.png, baselines "
        "marked) and write a markdown table of the top trials (report.md).",
    )
    store_arguments(report)
    report.add_argument("--top", type=int_at_least(1), default=10,
                        help="trials in the table (default: 10)")
    report.add_argument("--out", metavar="DIR", help="where to write (default: runs/STUDY/)")
    report.set_defaults(func=cmd_report)


def minutes(text: str) -> float:
    """``--checkpoint-minutes``: a number of minutes in (0, 1440]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of minutes, got {text!r}") from None
    if not 0.0 < value <= 1440.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1440] minutes, got {text}")
    return value


def fold_text(text: str) -> str:
    """``--fold k/K``, checked (argparse turns the ValueError into a usage error)."""
    from trainers.config import parse_fold

    fold = parse_fold(text)
    if fold is None:
        raise argparse.ArgumentTypeError(
            f"{text!r}: must be k/K with 2 <= K <= 20 folds and 1 <= k <= K (such as 1/5)")
    return f"{fold[0]}/{fold[1]}"


def _model_command(sub: argparse._SubParsersAction, name: str, func: object, text: str,
                   description: str) -> argparse.ArgumentParser:
    """A command on a trained model (evaluate, predict): the model, and where it runs."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=text, description=description)
    parser.add_argument("model", metavar="RUN_OR_CKPT", nargs="+",
                        help="run folder, model.pt (config.json beside it) or checkpoint.pt; "
                        "several: their ensemble (the mean of their softmax outputs)")
    parser.add_argument("--weights", metavar="W1,W2,...",
                        help="ensemble: each model's weight in the mean (default: equal)")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda if present")
    parser.set_defaults(func=func)
    return parser


def cmd_promote(args: argparse.Namespace, out: TextIO) -> int:
    from search.cli import tensorboard_ready
    from search.results.promote import PromoteOptions, promote

    if args.tensorboard:
        tensorboard_ready(args.tensorboard)
    return promote(PromoteOptions(
        trial=args.trial, study=args.study, storage=args.storage, study_name=args.study_name,
        epochs=args.epochs, data=args.data, device=args.device, ray_address=args.ray_address,
        restart=args.restart, out=args.out, teachers=tuple(args.teacher),
        teacher_weights=args.teacher_weights, teacher_cache=args.teacher_cache, fold=args.fold,
        kd_alpha=args.kd_alpha, kd_temperature=args.kd_temperature, compile=args.compile,
        checkpoint_every=args.checkpoint_every, checkpoint_minutes=args.checkpoint_minutes,
        tensorboard=args.tensorboard, artifacts=args.artifacts,
    ), out)


def cmd_evaluate(args: argparse.Namespace, out: TextIO) -> int:
    from search.results.evaluate import evaluate_run, print_evaluation

    print_evaluation(evaluate_run(args.model, args.data, args.out, args.device, out,
                                  weights=args.weights), out)
    return 0


def cmd_predict(args: argparse.Namespace, out: TextIO) -> int:
    from search.args import UsageError
    from search.results.evaluate import predict_file

    if args.attach and len(args.model) != 1:
        raise UsageError("--attach: one run only (an ensemble's CSV belongs to no one trial)")
    if args.attach:
        from search.dashboard import run_trial

        try:
            url, study, number = run_trial(args.model[0], args.storage)
        except ValueError as err:
            raise UsageError(f"--attach: {err}") from None
    predict_file(args.model, args.input, args.out, args.device, out, weights=args.weights)
    if args.attach:
        from search.dashboard import ArtifactStoreError, upload_to_finished_trial
        from search.storage import StorageError

        try:
            location, _ = upload_to_finished_trial(url, study, number, [Path(args.out)],
                                                   args.artifacts)
        except (ArtifactStoreError, StorageError, OSError, KeyError) as err:
            raise UsageError(f"--attach: {args.out} was written but not attached: {err}") \
                from None
        print(f"attached {Path(args.out).name} to trial {number} of study {study} "
              f"(artifact store {location})", file=out)
    return 0


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    from search.results.export import export_run, print_export

    print_export(export_run(args.run, args.format, args.out, out, data=args.data,
                            tolerance=args.tolerance), out)
    return 0


def cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    from search.results.report import write_report
    from search.storage import RUNS_DIR

    study = study_from_store(args)
    budget = None
    try:
        from space import load_spec

        budget = load_spec(args.study).budget
    except ValueError:  # a study only in the store, with no file: plot without the budget
        pass
    folder = Path(args.out) if args.out else RUNS_DIR / study.study_name  # type: ignore[attr-defined]
    report = write_report(study, folder, budget=budget, top=args.top)  # type: ignore[arg-type]
    print(report.markdown, file=out)
    print(f"written  {report.pareto_png}, {report.table_md}", file=out)
    return 0
