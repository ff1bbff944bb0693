"""Images from containers: `docker commit`, and `docker build` from a Labfile.

A container's changes are all in its upperdir (``labcore.image.layers``). Commit turns that directory into one
more layer — a tar, its overlayfs whiteouts written back as OCI ``.wh.`` files — on top of the image's
layers, with the image's config and one more history entry. That is all an image build is:

    FROM busybox                    the layers and config to start from
    RUN echo hi > /motd             a container on the image so far runs the command; its upperdir is committed
    COPY greeting.txt /             files from the build context, as a new layer (no container needed)
    ENV, WORKDIR, CMD, ENTRYPOINT   the config only: a history entry marked "empty_layer", no layer

Each step's result is cached under a key made as Docker's classic builder makes it: the key of the step
before (for FROM, the base image's ID), the instruction's text, and for COPY a checksum of the copied files'
contents and modes (not their times). An unchanged rebuild finds every key ("---> Using cache"); a changed
instruction misses, and so does every step after it, since their keys include it.
(docs.docker.com, "Dockerfile reference" and "Build cache"; moby's builder/dockerfile.)

The cache is ``<images>/build-cache/<key>.json``: the layers' digests and the config after that step. Like
the image store it is kept, not journaled. A RUN leaves an untagged image (Docker's intermediate image)
for its container to start from.

Notebook 05 shows both as steps (``labcore.lessons.union_fs.commit`` and ``build_image``).

Next: `labcore images` lists what was built; `labcore run NAME` runs it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from labcore import paths
from labcore.errors import BadInput, LabError, NotFound
from labcore.image import layers

INSTRUCTIONS = ("FROM", "RUN", "COPY", "ENV", "WORKDIR", "CMD", "ENTRYPOINT")
ACCEPTED = (f"one instruction per line: {', '.join(INSTRUCTIONS)}, then its arguments "
            f"(e.g. RUN echo hi > /motd); '#' starts a comment, '\\' at the end continues a line")


# --- commit: an upperdir becomes a layer --------------------------------------------------------------

@dataclass
class Commit:
    """What `docker commit` made: the image, the image it was made on, and the layer the upperdir became."""
    container: str             # the container's ID
    upper: Path
    xattr: str                 # where its markers are: trusted.overlay.*, or user.overlay.* rootless
    base: object
    image: object
    entries: list[str]         # the new layer's names, its whiteouts as .wh. files


def commit(container_ref: str, reference: str, comment: str = "") -> Commit:
    """docker commit CONTAINER IMAGE[:TAG]: the container's upperdir as a new layer on its image's layers."""
    from labcore.image import oci
    from labcore.runtime import lifecycle
    name, tag = oci.split_reference(reference)     # refused before anything is written
    record = lifecycle.find(container_ref)
    upper, xattr = record.directory / "upper", layers.xattr_namespace(record.config.get("rootless"))
    if not upper.is_dir():
        raise NotFound(f"container {record.id[:12]} has no upperdir", path=str(upper),
                       fix="commit a container that was kept after it ran (run it without --rm)")
    store = oci.Store()
    base = store.resolve(record.config["image_id"])
    layer = store_layer(store, layers.layer_tar(upper, xattr))
    config = _with_history(json.loads(store.read_blob(base.id)), comment or " ".join(record.config["argv"]))
    image = store.add_image([*(item.path for item in base.layers), layer["path"]], config, name, tag)
    return Commit(record.id, upper, xattr, base, image, layer["entries"])


def commit_image(record, name: str | None, tag: str, comment: str = "", changes=(), author: str = ""):
    """`docker commit` through the API: the upperdir as a layer, ``changes`` (Dockerfile lines: CMD, EXPOSE,
    ENV...) applied to the config, and the image it came from recorded as its "parent"."""
    from labcore.image import oci
    upper, xattr = record.directory / "upper", layers.xattr_namespace(record.config.get("rootless"))
    store = oci.Store()
    base = store.resolve(record.config["image_id"])
    layer_paths = [item.path for item in base.layers]
    if upper.is_dir():
        layer_paths.append(store_layer(store, layers.layer_tar(upper, xattr))["path"])
    document = json.loads(store.read_blob(base.id))
    document = {**document, "config": apply_changes(document.get("config") or {}, changes), "parent": base.id,
                "container": record.id, **({"author": author} if author else {})}
    document = _with_history(document, comment or " ".join(record.config["argv"]))
    return store.add_image(layer_paths, document, name, tag)


def tag_image(image, reference: str) -> None:
    from labcore.image import oci
    store = oci.Store()
    store.point(store.descriptor(image), *oci.split_reference(reference))


CHANGES = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "USER", "VOLUME", "WORKDIR", "STOPSIGNAL")


def apply_changes(config: dict, changes) -> dict:
    """`docker commit --change` / `docker import --change`: Dockerfile instructions that set the config only."""
    config = dict(config)
    for line in changes:
        keyword, _, argument = line.strip().partition(" ")
        keyword, argument = keyword.upper(), argument.strip()
        if keyword not in CHANGES:
            raise BadInput(f"{keyword} is not a valid change command", fix=f"use one of {', '.join(CHANGES)}")
        instruction = Instruction(0, keyword, argument)
        if keyword in ("CMD", "ENTRYPOINT"):
            config["Cmd" if keyword == "CMD" else "Entrypoint"] = command_argv(instruction)
        elif keyword == "ENV":
            env = dict(item.split("=", 1) for item in config.get("Env") or [])
            env.update(env_pairs(instruction))
            config["Env"] = [f"{name}={value}" for name, value in env.items()]
        elif keyword in ("EXPOSE", "VOLUME"):
            field_name = "ExposedPorts" if keyword == "EXPOSE" else "Volumes"
            words = json.loads(argument) if argument.startswith("[") else argument.split()
            config[field_name] = {**(config.get(field_name) or {}), **{
                (w if "/" in w or keyword == "VOLUME" else f"{w}/tcp"): {} for w in words}}
        elif keyword == "LABEL":
            config["Labels"] = {**(config.get("Labels") or {}), **dict(env_pairs(instruction))}
        else:
            config[{"USER": "User", "WORKDIR": "WorkingDir", "STOPSIGNAL": "StopSignal",
                    "ONBUILD": "OnBuild"}[keyword]] = [argument] if keyword == "ONBUILD" else argument
    return config


def store_layer(store, tar: bytes) -> dict:
    """Store a layer tar gzipped, as registries keep them (gzip without a timestamp: same tar, same digest)."""
    import gzip
    import io
    import tarfile
    from labcore.image.oci import LAYER_GZIP
    descriptor = store.write_blob(gzip.compress(tar, compresslevel=6, mtime=0), LAYER_GZIP)
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        entries = archive.getnames()
    return {"digest": descriptor["digest"], "diff_id": "sha256:" + hashlib.sha256(tar).hexdigest(),
            "path": store.blob_path(descriptor["digest"]), "entries": entries or ["(empty)"]}


# --- the Labfile ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Instruction:
    line: int                  # where it starts in the Labfile, for errors
    keyword: str               # upper case, one of INSTRUCTIONS
    argument: str

    def __str__(self) -> str:
        return f"{self.keyword} {self.argument}"


def parse_labfile(text: str) -> list[Instruction]:
    """The instructions of a Labfile, each checked; BadInput names the first bad line and what is accepted."""
    instructions = []
    for number, line in logical_lines(text):
        keyword, *argument = line.split(None, 1)
        instruction = Instruction(number, keyword.upper(), "".join(argument).strip())
        if instruction.keyword not in INSTRUCTIONS:
            raise BadInput(f"Labfile line {number}: unknown instruction: {keyword}", fix=ACCEPTED)
        if not instruction.argument:
            raise BadInput(f"Labfile line {number}: {instruction.keyword} requires at least one argument",
                           fix=ACCEPTED)
        check_arguments(instruction, first=not instructions)
        instructions.append(instruction)
    if not instructions:
        raise BadInput("the Labfile has no instructions", fix="start with FROM IMAGE; " + ACCEPTED)
    return instructions


def logical_lines(text: str):
    """(line number, text) without comments and blank lines, '\\'-continued lines joined (Dockerfile rules)."""
    start, pending = 0, ""
    for number, raw in enumerate(text.splitlines(), start=1):
        if not pending and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        start = start if pending else number
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        yield start, pending + raw
        pending = ""
    if pending:
        yield start, pending


def check_arguments(instruction: Instruction, first: bool) -> None:
    """What each instruction takes, refused with the line number before anything is built."""
    where, keyword = f"Labfile line {instruction.line}", instruction.keyword
    if first and keyword != "FROM":
        raise BadInput(f"{where}: the first instruction must be FROM, got {keyword}", fix=ACCEPTED)
    if not first and keyword == "FROM":
        raise BadInput(f"{where}: a second FROM: multi-stage builds are not supported", fix=ACCEPTED)
    if keyword == "COPY" and (len(copy_arguments(instruction)) < 2 or instruction.argument.startswith("--")):
        raise BadInput(f"{where}: COPY takes SOURCE... DEST (options such as --chown are not supported)",
                       fix="e.g. COPY greeting.txt /greeting.txt")
    if keyword == "ENV":
        env_pairs(instruction)
    if keyword in ("RUN", "CMD", "ENTRYPOINT"):
        command_argv(instruction)


def command_argv(instruction: Instruction) -> list[str]:
    """The exec form ``["executable", "arg"]`` as it is; the shell form runs under /bin/sh -c, as Docker's."""
    text = instruction.argument
    if not text.startswith("["):
        return ["/bin/sh", "-c", text]
    try:
        argv = json.loads(text)
    except ValueError:
        argv = None
    if not (isinstance(argv, list) and argv and all(isinstance(item, str) for item in argv)):
        raise BadInput(f"Labfile line {instruction.line}: {instruction.keyword} {text} is not a JSON list of "
                       f"strings", fix=f'write {instruction.keyword} ["executable", "arg"], or the shell form')
    return argv


def env_pairs(instruction: Instruction) -> list[tuple[str, str]]:
    """``ENV A=1 B="two words"``, or the old form ``ENV A one value``."""
    words = shlex.split(instruction.argument)
    if "=" not in words[0]:
        value = instruction.argument.split(None, 1)[1:] or [""]
        pairs = [(words[0], value[0])] if len(words) > 1 else []
    else:
        pairs = [tuple(word.split("=", 1)) for word in words if "=" in word]
        pairs = pairs if len(pairs) == len(words) else []
    if not pairs or not all(name for name, _ in pairs):
        raise BadInput(f"Labfile line {instruction.line}: ENV takes NAME=VALUE ... (or NAME VALUE)",
                       fix="e.g. ENV GREETING=hello")
    return pairs


def copy_arguments(instruction: Instruction) -> list[str]:
    text = instruction.argument
    return json.loads(text) if text.startswith("[") else text.split()


# --- the build ------------------------------------------------------------------------------------

@dataclass
class BuildStage:
    """The image so far: its layers (base first) and its whole OCI config. The unit the cache keeps."""
    key: str
    layers: list[dict]         # {"digest", "diff_id"}
    config: dict
    cmd_set: bool = False      # a CMD in this Labfile, which a later ENTRYPOINT keeps (Docker's rule)
    id: str = ""               # FROM's image ID as stored; other stages' IDs are computed

    def image_id(self) -> str:
        """The ID the image would have: the digest of the config that add_image would store."""
        if self.id:
            return self.id
        from labcore.image.oci import config_document
        document = config_document(self.config, [layer["diff_id"] for layer in self.layers])
        return "sha256:" + hashlib.sha256(document).hexdigest()


@dataclass
class Build:
    """What `labcore build` printed, and the image it made."""
    echo: bool = False         # print each line as it comes (the CLI)
    log: list[str] = field(default_factory=list)
    image: object = None
    cached: int = 0            # steps whose result came from the cache

    def say(self, line: str) -> None:
        self.log.append(line)
        if self.echo:
            print(line, flush=True)

    @property
    def layers(self) -> int:
        return len(self.image.layers)

    def __str__(self) -> str:
        return "\n".join(self.log)

    __repr__ = __str__


def build(context, labfile=None, tag: str | None = None, echo: bool = False) -> Build:
    """docker build -f LABFILE -t NAME[:TAG] CONTEXT: one step per instruction, each from the cache if it can.
    A RUN step needs a container: where this host refuses one, NeedsPrivilege or NotSupportedHere says why."""
    from labcore.image import oci
    context = Path(context)
    labfile = Path(labfile) if labfile else context / "Labfile"
    if not context.is_dir():
        raise BadInput(f"unable to prepare context: path {str(context)!r} not found", fix="give a directory")
    try:
        instructions = parse_labfile(labfile.read_text())
    except FileNotFoundError as err:
        raise BadInput(f"no Labfile at {labfile}", fix="pass -f LABFILE, or put a Labfile in the context") from err
    name, version = oci.split_reference(tag) if tag else (None, "latest")
    result = Build(echo=echo)
    store, stage = oci.Store(), None
    for number, instruction in enumerate(instructions, start=1):
        result.say(f"Step {number}/{len(instructions)} : {instruction}")
        stage = run_step(store, stage, instruction, context, result)
        result.say(f" ---> {stage.image_id()[7:19]}")
    result.image = store.add_image([store.blob_path(layer["digest"]) for layer in stage.layers], stage.config,
                                   name, version)
    result.say(f"Successfully built {result.image.short_id}")
    if name:
        result.say(f"Successfully tagged {name}:{version}")
    return result


def run_step(store, stage: BuildStage | None, instruction: Instruction, context: Path, result: Build) -> BuildStage:
    """One instruction: FROM starts, the cache answers if it has the key, else the instruction runs."""
    if instruction.keyword == "FROM":
        return from_image(store, instruction.argument)
    content = copy_checksum(context, instruction, stage) if instruction.keyword == "COPY" else ""
    key = cache_key(stage.key, instruction, content)
    cached = load_cached(store, key)
    if cached is None:
        cached = STEPS[instruction.keyword](store, stage, instruction, context, result)
        cached.key = key
        save_cached(cached)
    else:
        result.say(" ---> Using cache")
        result.cached += 1
    cached.cmd_set = stage.cmd_set or instruction.keyword == "CMD"
    return cached


def from_image(store, reference: str) -> BuildStage:
    from labcore.runtime.container import find_image
    image = find_image(reference)
    return BuildStage(image.id, [{"digest": layer.digest, "diff_id": layer.diff_id} for layer in image.layers],
                 json.loads(store.read_blob(image.id)), id=image.id)


def cache_key(parent: str, instruction: Instruction, content: str = "") -> str:
    """Docker's classic cache key: the step before, this instruction's text, for COPY the files' checksum.
    Not the line number: a comment added above a step does not change what it builds."""
    return hashlib.sha256(json.dumps([parent, str(instruction), content]).encode()).hexdigest()


def cache_dir() -> Path:
    return paths.images_dir() / "build-cache"


def prune_cache() -> str:
    """docker builder prune: forget every cached step. The images built stay; the next build runs every step."""
    entries = sorted(cache_dir().glob("*.json")) if cache_dir().is_dir() else []
    for entry in entries:
        entry.unlink()
    return f"removed {len(entries)} build cache entries"


def load_cached(store, key: str) -> BuildStage | None:
    """The stage a key built before, if every layer blob it names is still in the store (rmi may drop them)."""
    try:
        saved = json.loads((cache_dir() / f"{key}.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not all(store.blob_path(layer["digest"]).exists() for layer in saved["layers"]):
        return None
    return BuildStage(key, saved["layers"], saved["config"])


def save_cached(stage: BuildStage) -> None:
    cache_dir().mkdir(parents=True, exist_ok=True)
    temporary = cache_dir() / f".{paths.PREFIX}-{stage.key}.{os.getpid()}"
    temporary.write_text(json.dumps({"layers": stage.layers, "config": stage.config}))
    os.replace(temporary, cache_dir() / f"{stage.key}.json")      # readers never see half an entry


# --- the instructions --------------------------------------------------------------------------------

def run_instruction(store, stage: BuildStage, instruction: Instruction, context: Path, result: Build) -> BuildStage:
    """RUN: a container on the image so far runs the command; its upperdir becomes the next layer."""
    from labcore.runtime import container, engine
    image = store.add_image([store.blob_path(layer["digest"]) for layer in stage.layers], stage.config, None)
    spec = container.Spec(image.id, command_argv(instruction), entrypoint=[])
    result.say(f" ---> Running in {spec.id[:12]}")
    try:
        ran = container.run(spec)
        output = (ran.stdout + ran.stderr).decode(errors="replace").rstrip("\n")
        if output:
            result.say(output)
        if ran.exit_code != 0:
            raise LabError(f"The command '{' '.join(ran.argv)}' returned a non-zero code: {ran.exit_code}",
                           fix=f"fix line {instruction.line} of the Labfile; the steps before it are cached")
        layer = store_layer(store, layers.layer_tar(paths.containers_dir() / spec.id / "upper"))
    finally:
        if (paths.containers_dir() / spec.id / "state.json").exists():
            engine.remove(spec.id)
            result.say(f"Removing intermediate container {spec.id[:12]}")
    return with_layer(store, stage, layer, " ".join(command_argv(instruction)))


def copy_instruction(store, stage: BuildStage, instruction: Instruction, context: Path, result: Build) -> BuildStage:
    """COPY: the files from the build context, as a layer of their own (owned by root, as Docker's are)."""
    layer = store_layer(store, copy_tar(copy_entries(context, instruction, stage)))
    return with_layer(store, stage, layer, f"/bin/sh -c #(nop) {instruction}")


def config_instruction(store, stage: BuildStage, instruction: Instruction, context: Path, result: Build) -> BuildStage:
    """ENV, WORKDIR, CMD, ENTRYPOINT: a new config and a history entry marked empty_layer; no layer."""
    config = dict(stage.config.get("config") or {})
    keyword = instruction.keyword
    if keyword == "ENV":
        env = dict(item.split("=", 1) for item in config.get("Env") or [])
        env.update(env_pairs(instruction))
        config["Env"] = [f"{name}={value}" for name, value in env.items()]
    elif keyword == "WORKDIR":
        config["WorkingDir"] = posixpath.normpath(posixpath.join(config.get("WorkingDir") or "/",
                                                                 instruction.argument))
    else:
        config["Cmd" if keyword == "CMD" else "Entrypoint"] = command_argv(instruction)
        if keyword == "ENTRYPOINT" and not stage.cmd_set:
            config.pop("Cmd", None)            # the base image's CMD was written for another entrypoint
    created_by = f"/bin/sh -c #(nop)  {instruction}"
    document = {**stage.config, "config": config}
    return BuildStage("", stage.layers, _with_history(document, created_by, empty=True))


def with_layer(store, stage: BuildStage, layer: dict, created_by: str) -> BuildStage:
    layers_after = [*stage.layers, {"digest": layer["digest"], "diff_id": layer["diff_id"]}]
    return BuildStage("", layers_after, _with_history(stage.config, created_by))


def _with_history(document: dict, created_by: str, empty: bool = False) -> dict:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    entry = {"created": now, "created_by": created_by, **({"empty_layer": True} if empty else {})}
    return {**document, "created": now, "history": [*document.get("history", []), entry]}


STEPS = {"RUN": run_instruction, "COPY": copy_instruction, "ENV": config_instruction,
         "WORKDIR": config_instruction, "CMD": config_instruction, "ENTRYPOINT": config_instruction}


# --- COPY's files -------------------------------------------------------------------------------------

def copy_entries(context: Path, instruction: Instruction, stage: BuildStage) -> list[tuple[str, Path | None]]:
    """(name in the layer, file in the context) for each entry COPY makes, parents first (None: a directory
    made for the destination). A source must stay inside the context; a directory's contents are copied."""
    *sources, dest = copy_arguments(instruction)
    workdir = (stage.config.get("config") or {}).get("WorkingDir") or "/"
    target = posixpath.normpath(posixpath.join(workdir, dest)).lstrip("/")
    into_dir = dest.endswith("/") or len(sources) > 1
    entries = [(parent.as_posix(), None) for parent in reversed(PurePosixPath(target).parents) if parent.parts]
    root = context.resolve()
    for source in sources:
        path = (context / source).resolve()
        if not path.is_relative_to(root) or not path.exists():
            raise BadInput(f"Labfile line {instruction.line}: COPY failed: {source!r} is not a file or directory "
                           f"inside the build context {context}", fix="name a path under the context directory")
        if path.is_dir():
            entries += [(target, None)] if target else []
            entries += [(posixpath.join(target, found.relative_to(path).as_posix()), found)
                        for found in layers.walk(path)]
        else:
            entries.append((posixpath.join(target, path.name) if into_dir else target, path))
    return list(dict.fromkeys(entries))


def copy_checksum(context: Path, instruction: Instruction, stage: BuildStage) -> str:
    """The files' names, types, modes and contents (not their times: Docker's rule), hashed."""
    digest = hashlib.sha256()
    for name, path in copy_entries(context, instruction, stage):
        info = os.lstat(path) if path else None
        if info is not None and path.is_symlink():
            kind = "link:" + os.readlink(path)
        elif info is None or path.is_dir():
            kind = "dir"
        else:
            kind = "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
        digest.update(f"{name}\0{kind}\0{info.st_mode if info else 0o40755:o}\n".encode())
    return digest.hexdigest()


def copy_tar(entries: list[tuple[str, Path | None]]) -> bytes:
    """The COPY layer: owner 0:0, modes and times as in the context, directories made for DEST 0755."""
    import io
    import tarfile
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in entries:
            info = tar.gettarinfo(str(path), name) if path else tarfile.TarInfo(name)
            if path is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = int(info.mtime)
            with open(path, "rb") if info.isreg() else contextlib.nullcontext() as data:
                tar.addfile(info, data)
    return buffer.getvalue()
