"""The pattern every id a client names must match (characters, voices, sessions, audio
files), in a module of its own: what needs only the pattern (the speech function, the
voices list, path parameters) does not build the character models (issue 30)."""

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
