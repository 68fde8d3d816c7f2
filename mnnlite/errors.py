"""One exception family for everything a user can get wrong.

Each message is one line that names the file, key, op or tensor, what was expected and what was found;
the CLI prints it as is and exits with code 2.
"""


class MnnliteError(Exception):
    """Base class: a user-facing error with a one-line message."""


class FormatError(MnnliteError):
    """A .mnn (or .weight) file is not a valid model."""


class UnsupportedOpError(MnnliteError):
    """The model uses an op the runtime has no kernel for."""


class ShapeError(MnnliteError):
    """Inputs or intermediate shapes do not fit an op."""


class ConfigError(MnnliteError):
    """A quantizer config key is missing, unknown or out of range."""


class DataError(MnnliteError):
    """Calibration or validation data cannot be used."""


class BuildError(MnnliteError, ImportError):
    """The compiled extensions are missing: the package was not built."""


class ResourceError(MnnliteError):
    """An op, input or image would need more memory or iterations than the limits allow."""


class OutputError(MnnliteError):
    """An output cannot be written, or would overwrite an input or another output."""


class Interrupted(MnnliteError):
    """SIGINT or SIGTERM arrived; temporaries were removed (the CLI exits with code 3)."""


def did_you_mean(word: str, choices) -> str:
    """`` (did you mean 'width'?)`` when ``word`` is close to one of ``choices`` (difflib), else ""."""
    import difflib

    choices = [str(c) for c in choices]
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
