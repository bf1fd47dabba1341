"""User-facing errors.

Anything the user can fix (a bad name, a missing file, a store built with other arguments) raises
`AftpipeError` with one sentence that names the problem and the fix. The CLI prints it on one line and
exits non-zero; everything else is a bug and keeps its traceback.
"""


class AftpipeError(Exception):
    """An error the user can fix; its message names the problem and the fix."""
