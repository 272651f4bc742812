"""The one error every SAE reader raises, kept apart so that each format's module can raise it."""


class SaeFormatError(ValueError):
    """An uploaded SAE is unusable; the message names the problem so the researcher can fix it.

    `filename` names the file at fault where one is, so a form can show the message beside that file.
    """

    def __init__(self, message: str, filename: str | None = None) -> None:
        super().__init__(message)
        self.filename = filename
