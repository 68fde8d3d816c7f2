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
