"""Options several commands share."""

IMPLS = ("fast", "ref", "mnn")


def add_runtime_options(parser) -> None:
    """--impl and --threads, for commands that run models."""
    parser.add_argument("--impl", choices=IMPLS, default="fast",
                        help="compiled kernels (fast, default), the numpy references (ref), or kernels that "
                             "reproduce the official x86 runtime's float rounding bit for bit (mnn; slower)")
    parser.add_argument("--threads", type=int, default=1, help="threads for the compiled kernels (default 1)")
    add_memory_option(parser)


def add_memory_option(parser) -> None:
    parser.add_argument("--max-memory", metavar="SIZE", default=None,
                        help="largest single allocation allowed, e.g. 2G (default: the available RAM); an op "
                             "that needs more stops with one line naming op, shape and bytes")


def apply_memory(args) -> None:
    """``--max-memory`` becomes the process's budget (mnnlite.limits); a bad size is a ConfigError."""
    from ..limits import parse_size, set_max_memory

    value = getattr(args, "max_memory", None)
    if value is not None:
        set_max_memory(parse_size(value))


def add_layout_option(parser) -> None:
    """--layout: the order feeds and outputs (and sequence samples) use (mnnlite.layout)."""
    from ..layout import DEFAULT_LAYOUT, LAYOUTS

    parser.add_argument("--layout", choices=LAYOUTS, default=DEFAULT_LAYOUT,
                        help="model (default): every input and output in the layout the model declares, "
                             "e.g. NHWC for TFLite models, as MNN's Module API; nchw: Caffe (NCHW) order "
                             "whatever the declared layout, as MNN's Session API with Caffe tensors")


def apply_threads(args) -> None:
    """Give the compiled kernels ``--threads``; a bad count is a one-line ConfigError."""
    from ..errors import ConfigError
    from ..kernels.threads import set_num_threads

    apply_memory(args)
    try:
        set_num_threads(args.threads)
    except ValueError as exc:
        raise ConfigError(f"--threads: {exc}") from None


def add_ray_option(parser, what: str) -> None:
    """--ray ADDRESS, for commands whose samples can run as Ray tasks."""
    parser.add_argument("--ray", metavar="ADDRESS",
                        help=f"run the {what} as tasks on a Ray cluster: auto, local (a private Ray on "
                             f"127.0.0.1), HOST:PORT or ray://HOST:PORT; same result; needs mnnlite[ray]")
# ---------------------------------------------------------------------------------------------------------
# The conventions every command follows: --version, -q/--quiet, -v/--verbose, --json [OUT]

def add_common_options(parser, json_what: str, log: bool = False) -> None:
    """``--version``, ``-q``/``-v`` and ``--json [OUT]`` (``--json`` alone prints ``json_what`` on stdout
    and sends the text to stderr; ``--json OUT`` writes it to OUT).  ``log``: the command runs the
    quantizer, so it also takes ``--mnn-log`` (MNN's exact lines, with its C++ line numbers)."""
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"mnnlite {__version__}")
    level = parser.add_mutually_exclusive_group()
    level.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    level.add_argument("-v", "--verbose", action="store_true", help="print more detail")
    parser.add_argument("--json", nargs="?", const="-", metavar="OUT",
                        help=f"{json_what} as JSON: on stdout with --json alone (the text then goes to "
                             f"stderr), or written to OUT")
    if log:
        parser.add_argument("--mnn-log", action="store_true",
                            help="log exactly as MNN's quantized.out does (its C++ source line numbers, "
                                 "\\r progress)")


class Output:
    """Where a command's text and its JSON summary go, from ``add_common_options``' flags."""

    def __init__(self, args):
        self.level = 0 if getattr(args, "quiet", False) else 2 if getattr(args, "verbose", False) else 1
        self.json_to = getattr(args, "json", None)

    @property
    def verbose(self) -> bool:
        return self.level >= 2

    @property
    def stream(self):
        """The text stream (None when quiet): stderr when the JSON goes to stdout."""
        import sys

        if self.level == 0:
            return None
        return sys.stderr if self.json_to == "-" else sys.stdout

    def print(self, text: str = "", level: int = 1) -> None:
        stream = self.stream
        if stream is not None and self.level >= level:
            print(text, file=stream, flush=True)

    def json(self, summary: dict, inputs=()) -> None:
        """The summary on stdout (``--json``) or in a file (``--json OUT``, written atomically, never over
        one of ``inputs``, (role, path) pairs: ``mnnlite.safety``)."""
        import json
        import sys

        from ..errors import ConfigError
        from ..format.model_io import write_atomic

        if self.json_to is None:
            return
        text = json.dumps(summary, indent=2, default=_jsonable) + "\n"
        if self.json_to == "-":
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        try:
            write_atomic(self.json_to, text.encode(), "--json report", inputs)
        except OSError as exc:
            raise ConfigError(f"--json {self.json_to}: {exc.strerror or exc}") from None
        self.print(f"wrote {self.json_to}")


def _jsonable(value):
    """numpy scalars and arrays, paths: as plain JSON values."""
    import os

    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def setup_logging(args) -> None:
    """Python ``logging`` warnings (e.g. a config value replaced as MNN does) as ``mnnlite: ...`` on stderr;
    -q shows only errors, -v also informational messages."""
    import logging
    import sys

    level = logging.ERROR if getattr(args, "quiet", False) else \
        logging.INFO if getattr(args, "verbose", False) else logging.WARNING
    logger = logging.getLogger("mnnlite")
    if not any(getattr(h, "_mnnlite", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("mnnlite: %(levelname)s: %(message)s"))
        handler._mnnlite = True
        logger.addHandler(handler)
    logger.setLevel(level)
