"""Azure ML: the client and blob transfers, stages run as command jobs, and the jobs' entry point."""
