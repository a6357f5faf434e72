"""What switching adapters costs once the model is loaded, as `doit ask --all` switches them.

One og.Model and one og.Adapters serve every request; a request names its adapter on its own
generator (`set_active_adapter`) or none. Timed for a built model folder, best of ROUNDS: loading
the model, loading the adapter file, `set_active_adapter`, and a request's time to first token
(the templated question) right after a request with the same choice and right after a switch.
Usage: python benchmarks/adapter_switch.py models/<name>/onnx-ao/model \
           models/<name>/onnx-ao/adapters/<adapter>/adapter_weights.onnx_adapter [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ROUNDS = 7
QUESTION = "<|user|>\nwhat is the best thing to see in chicago<|end|>\n<|assistant|>\n"


def _first_token_ms(og, model, adapters, ids: list[int], adapter: str | None) -> tuple[float, float]:
    """(ms in set_active_adapter, ms from a new generator to its first token) for one request."""
    start = time.perf_counter()
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + 1)
    generator = og.Generator(model, params)
    switched = time.perf_counter()
    if adapter:
        generator.set_active_adapter(adapters, adapter)
    active = time.perf_counter()
    generator.append_tokens(ids)
    generator.generate_next_token()
    return 1000 * (active - switched), 1000 * (time.perf_counter() - start)


def measure(model_dir: Path, adapter_file: Path, device: str) -> dict:
    import onnxruntime_genai as og

    from tasks.ml.genai import load_model

    start = time.perf_counter()
    model = load_model(model_dir, device)
    loaded = time.perf_counter()
    adapters = og.Adapters(model)
    adapters.load(str(adapter_file), "a")
    adapter_loaded = time.perf_counter()
    ids = og.Tokenizer(model).encode(QUESTION).tolist()
    _first_token_ms(og, model, adapters, ids, "a")  # warm-up; the last request has no adapter
    _first_token_ms(og, model, adapters, ids, None)
    times: dict[str, list[float]] = {}
    for _ in range(ROUNDS):  # a, a, none, none: each choice once after a switch, once after itself
        for choice, after in (("a", "switch"), ("a", "same"), (None, "switch"), (None, "same")):
            ms, first = _first_token_ms(og, model, adapters, ids, choice)
            times.setdefault(f"first_token_ms_{'adapter' if choice else 'no_adapter'}_{after}", []).append(first)
            if choice:
                times.setdefault("set_active_adapter_ms", []).append(ms)
    return {
        "model": str(model_dir),
        "device": device,
        "prompt_tokens": len(ids),
        "model_load_ms": round(1000 * (loaded - start), 1),
        "adapter_load_ms": round(1000 * (adapter_loaded - loaded), 1),
        "adapter_bytes": adapter_file.stat().st_size,
        **{key: round(min(values), 3) for key, values in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("adapter_file", type=Path)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    sys.stdout.write(json.dumps(measure(args.model_dir, args.adapter_file, args.device), indent=1) + "\n")


if __name__ == "__main__":
    main()
