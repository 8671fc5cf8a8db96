"""The ``overspec`` command line: one module per subcommand."""
