"""A stage as plain data: what it reads, where it writes, and what its output depends on.

A stage module declares one `STAGE` and a `run(params, paths, out, channel)`; the engine never names
a stage: a stage's special cases (upstream that depends on params, inputs from outside the build,
network access) are functions of its own `Stage`, defined beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from tasks.paths import is_per_adapter


@dataclass(frozen=True)
class Stage:
    name: str
    module: str  # the module holding run(params, paths, out, channel)
    doc: str  # its line in `doit list`
    # Its folder (DVC-tracked as a whole), relative to the project; {name} is params.name. A stage
    # whose folder names {adapter} is built once per adapter (steps `<stage>:<adapter>`).
    output: str
    # Upstream stages; a stage of each adapter depends on its own adapter's step of a per-adapter
    # upstream, a stage of the model on every adapter's.
    upstream: tuple[str, ...] = ()
    # Distributions the stage uses without importing them (onnxruntime under onnxruntime-genai, the
    # builder run as a program); what its code imports is found by the import scan (fingerprint.py).
    libraries: tuple[str, ...] = ()
    params: tuple[str, ...] = ()  # params sections (top-level keys) the stage reads
    # Where it computes (params -> {name: auto|cpu|cuda}): its fingerprint holds what each choice
    # resolves to on the machine that builds, and `dtypes[device]` of the first: the compute dtype
    # the stage's run takes from the same mapping (a CPU build is never handed to a GPU machine).
    devices: Optional[Callable] = None
    dtypes: Optional[dict] = None
    # Files of the output also copied to a git-tracked place ({name} is params.name), e.g. a record.
    tracked_copies: tuple[tuple[str, str], ...] = ()
    # The stage's own special cases, as functions of the validated params (None: the fields above).
    upstream_when: Optional[Callable] = None  # params -> upstream stages
    params_when: Optional[Callable] = None  # params -> params sections
    derived: Optional[Callable] = None  # params -> {key: value} the output depends on beyond its sections
    external_inputs: Optional[Callable] = None  # (params, paths) -> {key: file or folder} from outside the build
    online: Optional[Callable] = None  # params -> whether its process may reach the network
    in_default_build: Optional[Callable] = None  # params -> whether a plain `doit` builds it
    verify: Optional[Callable] = None  # output folder -> None, or StageError: a restored copy's check
    # params -> why the stage cannot run with these params, or None; checked before its upstream runs.
    unable: Optional[Callable] = None
    # params -> what a user should know about its builds with these params (`doit info` shows it),
    # e.g. that a hub model's revision is not pinned.
    caveats: Optional[Callable] = None

    @property
    def per_adapter(self) -> bool:
        return is_per_adapter(self.output)

    def upstream_of(self, params) -> tuple[str, ...]:
        return tuple(self.upstream_when(params)) if self.upstream_when else self.upstream

    def sections_of(self, params) -> tuple[str, ...]:
        return tuple(self.params_when(params)) if self.params_when else self.params

    def is_default(self, params) -> bool:
        return self.in_default_build(params) if self.in_default_build else True
