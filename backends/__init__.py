"""Programs that do the work. Each one runs by hand: `python -m backends.<name> --config FILE`."""
