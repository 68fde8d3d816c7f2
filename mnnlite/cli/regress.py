"""``mnnlite regress CASES.toml [--jobs N] [--threads N] [--ray ADDRESS [--ship-data]] [--json [OUT]] [--junit OUT]
[--update-golden]``."""
from __future__ import annotations

from .common import Output, add_common_options, add_ray_option


def add_parser(sub):
    p = sub.add_parser("regress", help="quantize + validate declared cases and compare with golden metrics")
    p.add_argument("cases", help="the case file (TOML)")
    p.add_argument("--jobs", "-j", type=int, default=None,
                   help="cases run in parallel processes (default 1; with --ray: cases in flight, default all)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="calibration threads per case (default: the quantizer's); with --ray, CPUs per case task "
                        "(default 1)")
    add_ray_option(p, "cases")
    p.add_argument("--ship-data", action="store_true",
                   help="with --ray: send models and sample folders as Ray objects (default: workers read the "
                        "same paths, a shared file system)")
    p.add_argument("--junit", metavar="OUT", help="write JUnit XML")
    p.add_argument("--update-golden", action="store_true",
                   help="after showing the differences, record this run's metrics as the new goldens")
    p.add_argument("--only", action="append", metavar="NAME", help="run only the named case(s)")
    add_common_options(p, "the full report (every case, metric, golden value and check)")
    p.set_defaults(func=main)


def main(args) -> int:
    from ..errors import ConfigError
    from ..regress import load_cases, run_cases
    from ..regress.report import golden_diff, table, to_dict, write_junit

    out = Output(args)
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    if args.threads is not None and not 1 <= args.threads <= 64:
        raise ConfigError(f"--threads must be in 1..64, got {args.threads}")
    if args.ship_data and not args.ray:
        raise ConfigError("--ship-data needs --ray ADDRESS")
    cases = load_cases(args.cases)
    if args.only:
        unknown = set(args.only) - {c.name for c in cases}
        if unknown:
            raise ConfigError(f"{args.cases}: no case named {sorted(unknown)}; cases: {[c.name for c in cases]}")
        cases = [c for c in cases if c.name in args.only]
    _check_outputs(args, cases)

    def progress(done, total, result):
        out.print(f"[{done}/{total}] {result.case.name}: {result.verdict.upper()} ({result.seconds:.1f}s)"
                  + (f" - {result.message}" if result.message and (not result.ok or out.verbose) else ""))

    run = run_cases(cases, jobs=args.jobs if args.ray or args.jobs else 1, progress=progress, threads=args.threads,
                    ray=args.ray, ship_data=args.ship_data)
    if args.update_golden:
        out.print("Golden changes:\n" + golden_diff(run))
        run = _rejudge_with_update(cases, run)
    out.print(table(run))
    if out.verbose:
        for r in run.results:
            for name, value in sorted(((r.result or {}).get("metrics") or {}).items()):
                golden = ((r.golden or {}).get("metrics") or {}).get(name)
                out.print(f"{r.case.name}: {name} = {value:.6g}" + ("" if golden is None else f" (golden {golden:.6g})"))
    out.json(to_dict(run))
    if args.junit:
        write_junit(run, args.junit)
    return 0 if run.ok else 1


def _check_outputs(args, cases) -> None:
    """Before any case runs: the reports may not overwrite the cases file, a case's model, labels or
    golden, or each other (goldens are outputs only with --update-golden, and then inputs of nothing)."""
    from ..safety import check_distinct

    outputs = [(role, path) for role, path in (("--json report", args.json), ("--junit report", args.junit))
               if path]
    inputs = [("cases file", args.cases)]
    for c in cases:
        inputs += [(f"case {c.name!r} {role}", getattr(c, attr)) for attr, role in
                   (("model", "model"), ("labels", "labels file"), ("golden", "golden file"))
                   if isinstance(getattr(c, attr), str)]
    check_distinct(outputs, inputs)


def _rejudge_with_update(cases, run):
    """Write goldens from the results already computed (no second quantization)."""
    from ..regress.runner import RegressionRun, judge
    results = []
    for r in run.results:
        if r.result is None or "error" in (r.result or {}) or r.verdict == "error":
            results.append(r)
            continue
        results.append(judge(r.case, r.result, "", r.seconds, update_golden=True))
    return RegressionRun(results)

