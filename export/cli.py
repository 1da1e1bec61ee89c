"""``tfdebias export``: a finished run directory to a TF Serving model directory."""

from __future__ import annotations

from tfdebias.commands import command, int_at_least


_version = int_at_least(0, "integer version")


def _export_args(p):
    p.add_argument("run_dir", help="a finished run directory (tfdebias train / tune)")
    p.add_argument("--out", required=True, metavar="MODELS_DIR",
                   help="TF Serving models folder; writes MODELS_DIR/NAME/VERSION and MODELS_DIR/models.config")
    p.add_argument("--name", help="model name in TF Serving (default: the run's model, e.g. deepfm)")
    p.add_argument("--version", type=_version,
                   help="version number (default: one more than the highest existing version)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    p.add_argument("--verify", action="store_true",
                   help="before publishing, check in a Python process that cannot import tfdebias "
                        "that the SavedModel matches the Keras model within 1e-5 (1e-2 for a "
                        "model trained with --precision mixed_bfloat16)")
    p.add_argument("--no-warmup", action="store_true", help="do not write warm-up requests")
    p.add_argument("--data-dir", help="TFDS data directory")


@command("export", "export a finished run for TF Serving (SavedModel, warm-up requests, models.config)")(_export_args)
def _export(args) -> int:
    from tfdebias.export.serving import export_run

    res = export_run(args.run_dir, args.out, name=args.name, version=args.version,
                     overwrite=args.overwrite, verify=args.verify, data_dir=args.data_dir,
                     warmup=False if args.no_warmup else "auto")
    print(f"Exported {res.name!r} version {res.version}: {res.path}")
    print(f"  signatures:      {res.path / 'signature.txt'}")
    print(f"  warm-up records: {res.warmup_requests}")
    print(f"  model config:    {res.models_config}")
    if res.verified:
        v = res.verified
        print(f"  verified in a clean process (tfdebias not importable): max |diff| = "
              f"{v['max_abs_diff']:.2e} on {v['rows']} rows (tolerance {v['atol']:g})")
    return 0
