"""The API key of a remote backend: from a file named by a parameter, else from an environment
variable. The key itself never appears in an error message, a log line or a ``repr``."""
from __future__ import annotations

from collections.abc import Mapping
import os
from pathlib import Path

MAX_KEY_FILE_BYTES = 16384


class CredentialsError(ValueError):
    """The key file cannot be used; the message names the file (never its content) and the fix."""


def read_api_key(env_name: str, key_file: str, environ: Mapping[str, str] | None = None) -> str:
    """The key ('' for none): the first line of ``key_file`` when it is set, else ``$env_name``."""
    if key_file:
        path = Path(key_file).expanduser()
        try:
            raw = path.read_bytes()[:MAX_KEY_FILE_BYTES]
        except OSError as error:
            raise CredentialsError(f'cannot read the API key file {path} ({error.strerror}): set '
                                   'openai.api_key_file to a readable file holding the key') from None
        lines = raw.decode('utf-8', 'replace').strip().splitlines()
        if not lines or not lines[0].strip():
            raise CredentialsError(f'the API key file {path} is empty: write the key on its first line')
        return lines[0].strip()
    if not env_name:
        return ''
    return (os.environ if environ is None else environ).get(env_name, '').strip()
