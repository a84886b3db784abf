"""The kinds of failure a user can meet; the CLI turns them into exit codes 2, 1 and 130."""


class BadInput(ValueError):
    """Something the user wrote or asked for cannot work (exit 2); the message names it."""


class RunFailed(RuntimeError):
    """Good input, but the job could not run or finish (exit 1); the message says why."""


class Interrupted(Exception):
    """The user stopped it (Ctrl-C): exit 130, as a shell reports SIGINT; the message says what was kept."""
