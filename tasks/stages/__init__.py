"""One module per stage, named as its doit task: a `STAGE` and a `run()`; stages never import each other."""
