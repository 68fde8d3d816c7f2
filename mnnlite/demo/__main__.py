"""``python -m mnnlite.demo [OUT_DIR]``: quantize the bundled demo model, then validate it."""
import sys
import tempfile

from . import run


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = argv[0] if argv else tempfile.mkdtemp(prefix="mnnlite-demo-")
    _, check = run(out, log=sys.stdout)
    print()
    print(check.render())
    return 0 if check.passed else 1


if __name__ == "__main__":
    sys.exit(main())
