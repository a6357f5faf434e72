"""The build engine: stages as data, fingerprints, up-to-date checks, the stage process, DVC, the run lock."""
