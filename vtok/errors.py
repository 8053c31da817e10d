"""The one exception type whose message is shown to a user as it is."""


def one_line(text: str) -> str:
    """``text`` with every unprintable character (a newline in a file name, a NUL) shown escaped: one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class VtokError(Exception):
    """A problem with the user's input (file, config, checkpoint) explained in one line.

    The CLI prints ``vtok: error: <message>`` and exits with status 2; library
    callers can catch it to tell bad input from bugs. A name quoted in the message
    that holds a newline is shown escaped, so the message stays one line.
    """

    def __str__(self) -> str:
        return one_line(super().__str__())
