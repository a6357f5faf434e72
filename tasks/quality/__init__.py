"""A build's figures by name, the expression language over them, and the quality gates params set."""
