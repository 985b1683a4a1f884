"""The subcommands: one module each, with `add_cli(subparsers)` that only parses
arguments, calls the library and prints."""
