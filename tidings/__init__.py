"""Process entry points: the ``tidings`` command and the all-in-one dev runner."""
