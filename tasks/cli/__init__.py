"""The command line: the doit reporter and the subcommands (report, versions, push, pull)."""
