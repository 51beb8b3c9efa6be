"""``balm report``: tables (Markdown, CSV) and figures (PNG) of a sweep folder."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="tables (mean ± std over seeds) and figures of a sweep folder",
        description="Rebuild DIR/summary.csv from the result files and write DIR/report/: report.md, "
        "table*.csv, paired*.csv (paired differences against none and balm), leaders.csv (columns ranked per setting), lemma1*.csv and figures/*.png "
        "(modulation curves, t-SNE, Lemma 1).",
    )
    p.add_argument("dir", metavar="DIR", help="sweep folder (holding runs/)")
    p.add_argument("--tsne", choices=("first", "all", "none"), default="first",
                   help="t-SNE figures: first setting and seed per model (default), all settings, or none")
    p.add_argument("--no-curves", action="store_true", help="skip the KL / cosine / μ curves")
    p.add_argument("--select", choices=("dev",), default=None,
                   help="dev: per method and setting, the grid point (tau, rho, numeric method_options) with the "
                   "best mean dev W-F1 over seeds, and its test scores with paired differences against none; "
                   "writes DIR/report/select-dev.md and .csv only (test is never read to choose)")
    p.add_argument("--against", metavar="COLUMN", default=None,
                   help="also pair every column with this one across backbones (a column label of the table, "
                   "e.g. mmgcn+balm): per setting and pooled, mean ± std of the test differences, pairs ahead, "
                   "paired t-test p; writes DIR/report/against.csv")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.select == "dev":
        from balm.reporting.select import write_selection

        sel = write_selection(args.dir)  # no finished run: FileNotFoundError, reported by main
        print(sel["markdown"])
        print(f"selection: {sel['path']}")
        return 0
    from balm.reporting.report import make_report

    import sys

    rep = make_report(args.dir, tsne=args.tsne, curves=not args.no_curves, against=args.against,
                      warn=lambda line: print(f"balm report: warning: {line}", file=sys.stderr))
    if rep["diverged"]:
        print(f"balm report: {len(rep['diverged'])} diverged run(s) listed apart, in no table: "
              f"{', '.join(rep['diverged'])}", file=sys.stderr)
    if rep["missing"]:
        print(f"balm report: {len(rep['missing'])} planned run(s) have no result: {', '.join(rep['missing'][:10])}"
              f"{' ...' if len(rep['missing']) > 10 else ''}", file=sys.stderr)
    print(rep["table"])
    if rep["against"]:
        print(rep["against"])
    if rep["paired"]:
        print(rep["paired"])
    if rep["leaders"]:
        print(rep["leaders"])
    print(f"report: {rep['markdown']}")
    if rep["figures"]:
        print(f"figures ({len(rep['figures'])}): {rep['dir'] / 'figures'}")
    return 0
