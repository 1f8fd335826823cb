"""`python -m backends.data`: check data, save studio datasets, list the catalog.

  python -m backends.data check PATH|CATALOG-ID --kind sft|preference|prompt|images [--map FIELD=COLUMN ...]
  python -m backends.data save  PATH|CATALOG-ID --kind ... --name NAME [--overwrite]
  python -m backends.data list [--kind KIND]          studio datasets in the data dir
  python -m backends.data catalog [--kind KIND]       the catalog (presets/datasets.yaml)

Exit codes: 0 the data can be used; 1 it cannot (the report says why); 2 a bad option.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from backends.common import paths
from backends.common.errors import FieldError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m backends.data", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp):
        sp.add_argument("source", help="a file or folder, a catalog id (Dahoas/rm-static, demo_sft, local/jsonfile) "
                                       "or a studio dataset name")
        sp.add_argument("--kind", required=True, choices=["sft", "preference", "prompt", "images"])
        sp.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                        help="map a field to a column, e.g. --map prompt=question --map response=answer")
        sp.add_argument("--transform", default=None, help="a named row transform (alpaca, sharegpt, hh_split, ...)")
        sp.add_argument("--model", default="", help="tokenizer for token lengths (default bundled:smollm2; "
                                                    "bundled:tiny-sd for images)")
        sp.add_argument("--max-len", type=int, default=512, help="max length in tokens (default 512)")
        sp.add_argument("--keep-bad", action="store_true", help="keep rows with problems (default: drop them)")
        sp.add_argument("--drop-too-long", action="store_true", help="also drop rows over --max-len")
        sp.add_argument("--data-split", default="", help="DeepSpeed-Chat's split over its 3 steps, e.g. 2,4,4")
        sp.add_argument("--eval-ratio", type=float, default=0.0, help="share of rows held out for evaluation")
        sp.add_argument("--seed", type=int, default=1234)
        sp.add_argument("--split", default=None, help="split of a saved DatasetDict / hub set (or eval for "
                                                      "local/jsonfile)")
        sp.add_argument("--data-dir", default=None, help="the studio's data dir (default ./data or $STUDIO_DATA_DIR)")
        sp.add_argument("--offline", action="store_true", help="never try the model hub")
        sp.add_argument("--lang", default="en", choices=["en", "zh"])
        sp.add_argument("--json", action="store_true", help="print the report as JSON")

    common(sub.add_parser("check", help="print the validation report"))
    sv = sub.add_parser("save", help="validate and save as a studio dataset")
    common(sv)
    sv.add_argument("--name", required=True)
    sv.add_argument("--overwrite", action="store_true")
    ls = sub.add_parser("list", help="studio datasets in the data dir")
    ls.add_argument("--kind", default=None)
    ls.add_argument("--data-dir", default=None)
    cat = sub.add_parser("catalog", help="the dataset catalog")
    cat.add_argument("--kind", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except FieldError as e:
        print(f"error: {e.field}: {e.message}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from . import catalog, store

    if args.cmd == "catalog":
        for e in catalog.load_catalog():
            if args.kind and args.kind not in e.kinds:
                continue
            print(f"{e.id:45s} {e.source:8s} {','.join(e.kinds):28s} {','.join(e.languages):8s} {e.size}")
        return 0
    if args.cmd == "list":
        for c in store.list_datasets(paths.data_dir(args.data_dir), args.kind):
            print(f"{c['name']:30s} {c.get('kind', ''):11s} {c.get('rows', ''):>7} rows  {c.get('source', '')}")
        return 0

    from .check import CheckOptions, check
    from .shapes import parse_map_args

    offline = args.offline or os.environ.get("HF_HUB_OFFLINE") == "1"
    opts = CheckOptions(kind=args.kind, mapping=parse_map_args(args.map) or None, transform=args.transform,
                        model=args.model, max_len=args.max_len, drop_bad=not args.keep_bad,
                        drop_too_long=args.drop_too_long, data_split=args.data_split, eval_ratio=args.eval_ratio,
                        seed=args.seed, split=args.split)
    dd = paths.data_dir(args.data_dir)
    opened, rep, rows = check(args.source, opts, dd, offline=offline)
    if args.json:
        print(json.dumps(rep.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(rep.to_text(args.lang))
    if not rep.usable:
        return 1
    if args.cmd == "save":
        folder = store.save(args.name, rows, rep, data_dir=dd, source=args.source, data_split=args.data_split,
                            eval_ratio=args.eval_ratio, seed=args.seed, overwrite=args.overwrite,
                            image_folder=opened.image_folder if opened else None)
        print(f"saved {len(rows)} rows as studio dataset {folder.name!r}: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
