"""The `midog` subcommands: each file parses its arguments, calls the library and prints."""
