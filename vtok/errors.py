"""The one exception type whose message is shown to a user as it is."""


class VtokError(Exception):
    """A problem with the user's input (file, config, checkpoint) explained in one line.

    The CLI prints ``vtok: error: <message>`` and exits with status 2; library
    callers can catch it to tell bad input from bugs.
    """
