"""Model code that knows nothing of doit, DVC or params: synthetic models, AWQ, the LoRA graph, genai."""
