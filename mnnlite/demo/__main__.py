"""``python -m mnnlite.demo [OUT_DIR]``: quantize the bundled demo model, then validate it."""
import argparse
import os
import sys
import tempfile

from ..cli.common import Output, add_common_options, setup_logging
from ..cli.main import run_guarded


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mnnlite.demo",
        description="Quantize the bundled PP-OCR text-direction classifier on 16 images, then validate the "
                    "int8 model against the float one on 4 held-out images (exit 1 if it misses the demo's "
                    "gate, cosine >= 0.95).")
    p.add_argument("out_dir", nargs="?", metavar="OUT_DIR",
                   help="folder for the quantized model, its scale dump and config.json (default: a new "
                        "temporary folder)")
    add_common_options(p, "the quantization and validation summaries", log=True)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(args)
    return run_guarded(_demo, args)


def _demo(args) -> int:
    from ..progress import ProgressDisplay
    from . import run

    out = Output(args)
    folder = args.out_dir or tempfile.mkdtemp(prefix="mnnlite-demo-")
    display = ProgressDisplay(out.stream)            # validation's progress (quantize shows its own)
    report, check = run(folder, log=out.stream, mnn_log=args.mnn_log,
                        progress=(lambda s, d, t: display.update(s, d, t) if s == "validate" else None))
    display.close()
    out.print()
    out.print(check.render())
    out.print()
    out.print(f"wrote {report.dst}\n      {report.scale_file} (scale dump)\n      "
              f"{os.path.join(folder, 'config.json')} (the config used: "
              f"mnnquant-lite {report.src} OUT.mnn {os.path.join(folder, 'config.json')})")
    out.json({"out_dir": folder, "config": os.path.join(folder, "config.json"), "quantize": report.to_dict(),
              "validate": check.to_dict()})
    return 0 if check.passed else 1


if __name__ == "__main__":
    sys.exit(main())
