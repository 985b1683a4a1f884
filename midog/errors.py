"""The one exception type users see: a short message that names the file and the problem."""


class MidogError(Exception):
    """An error caused by the user's input (file, option), reported without a traceback."""


def shown(name: object) -> str:
    """`name` for a message: control characters (a newline in a file name would start a
    forged line of the log) written as escapes, everything else as is."""
    text = str(name)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class ImageError(MidogError):
    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{shown(self.path)}: {problem}")


class UsageError(MidogError):
    """A bad option or an unusable output, found before any work: exit status 2."""

    exit_status = 2


class TimeBudgetError(ImageError):
    """One image ran past its time budget; the next image still runs."""


def image_error_line(image: object, exc: BaseException) -> str:
    """One line for any exception raised while working on one image: the MidogError's own
    text, or "<file>: <ExceptionType>: <message>" for an unexpected one."""
    image = shown(image)
    if isinstance(exc, MidogError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return f"{image}: out of memory"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{image}: {exc.strerror}" + (f" ({shown(exc.filename)})" if exc.filename and shown(exc.filename) != image else "")
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{image}: {type(exc).__name__}" + (f": {message}" if message else "")


class WriteError(MidogError):
    """An output could not be written (disk full, read-only, I/O error): the atomic writer
    left nothing half-written and the outputs written before are untouched."""

    def __init__(self, path: object, exc: OSError) -> None:
        import errno

        self.path = str(path)
        self.errno = exc.errno
        code = errno.errorcode.get(exc.errno or 0)
        cause = (exc.strerror or str(exc)) + (f" ({code})" if code else "")
        super().__init__(f"{shown(self.path)}: cannot write it: {cause}; earlier outputs are kept")

    @property
    def disk_full(self) -> bool:
        """No later output can be written either: the run should stop."""
        import errno

        return self.errno in (errno.ENOSPC, errno.EDQUOT)
