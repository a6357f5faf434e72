"""What the build measures and shows first, by name: the models evaluate compares and each step's key
figures (the versions table, the report, the registry's tags). Plain data, importing nothing: the
stages that measure or publish these read it from here (it is part of their code fingerprint)."""

# The models evaluate measures on the eval split, in order, with the names the report gives them.
VARIANTS = {
    "base": "base",
    "rtn": "round-to-nearest int4",
    "awq": "AWQ int4",
    "awq_adapter": "AWQ + adapter",
    "onnx_adapter": "ONNX + adapter",
}
# Each stage's key figures, the first one its headline (the report's, the end-of-run table's).
# Evaluate's are also the tags a registered version carries.
KEY_METRICS = {
    "data": ("train", "eval", "duplicates_dropped"),
    "base": ("bytes", "revision", "asset"),  # a hub model's commit, an Azure ML model's version
    "quantize": ("bytes", "seconds"),
    "finetune": ("last_loss", "seconds"),
    "export": ("bytes", "seconds"),
    "adapter": ("bytes", "lora_r"),
    "smoke": ("tokens_per_second",),
    "evaluate": (
        "perplexity_onnx_adapter",
        "perplexity_awq_adapter",
        "perplexity_base",
        "tokens_per_second_adapter",
        "bytes_onnx",
    ),
    "register": ("version",),
}
