"""The one exception type users see: a short message that names the file and the problem."""


class MidogError(Exception):
    """An error caused by the user's input (file, option), reported without a traceback."""


class ImageError(MidogError):
    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
