"""Repository tools that are not part of the installed package (run them with `python -m tools.<name>`)."""
