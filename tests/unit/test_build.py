"""Labfiles without root: parsing, the refusals that name the line and what is accepted, Docker's cache keys,
COPY's checksum (contents and modes, not times), and what the config-only instructions change."""
import os

import pytest

from labcore.errors import BadInput
from labcore.runtime import build
from labcore.runtime.build import Instruction, BuildStage

LABFILE = """# a comment, then a blank line

from busybox
RUN echo "built by labcore" > /etc/motd \\
    && rm /etc/group
COPY greeting.txt /greeting.txt
ENV GREETING=hello WHO="the lab"
CMD ["cat", "/greeting.txt"]
"""


def test_a_labfile_parses_into_instructions_with_their_lines():
    parsed = build.parse_labfile(LABFILE)
    assert [(i.line, i.keyword) for i in parsed] == [(3, "FROM"), (4, "RUN"), (6, "COPY"), (7, "ENV"), (8, "CMD")]
    assert parsed[1].argument == 'echo "built by labcore" > /etc/motd      && rm /etc/group'
    assert build.command_argv(parsed[1])[:2] == ["/bin/sh", "-c"]
    assert build.command_argv(parsed[4]) == ["cat", "/greeting.txt"]
    assert build.env_pairs(parsed[3]) == [("GREETING", "hello"), ("WHO", "the lab")]


@pytest.mark.parametrize("text, message", [
    ("FROM busybox\nRUNN echo hi\n", "Labfile line 2: unknown instruction: RUNN"),
    ("RUN echo hi\n", "Labfile line 1: the first instruction must be FROM"),
    ("FROM busybox\nFROM busybox\n", "Labfile line 2: a second FROM"),
    ("FROM busybox\nCOPY onlyone\n", "Labfile line 2: COPY takes SOURCE... DEST"),
    ("FROM busybox\nCOPY --chown=1 a /b\n", "Labfile line 2: COPY takes SOURCE... DEST"),
    ("FROM busybox\n\nENV NOVALUE\n", "Labfile line 3: ENV takes NAME=VALUE"),
    ("FROM busybox\nCMD [\"sh\", 1]\n", "Labfile line 2: CMD .* is not a JSON list of strings"),
    ("FROM busybox\nWORKDIR\n", "Labfile line 2: WORKDIR requires at least one argument"),
    ("# nothing\n", "no instructions"),
])
def test_bad_lines_are_refused_naming_the_line_and_the_accepted_instructions(text, message):
    with pytest.raises(BadInput, match=message) as caught:
        build.parse_labfile(text)
    accepted = "FROM, RUN, COPY, ENV, WORKDIR, CMD, ENTRYPOINT"
    assert accepted in caught.value.fix or caught.value.fix.startswith(("e.g.", "write"))   # or the form


def test_cache_keys_chain_the_parent_and_the_instruction_text_but_not_the_line():
    run = Instruction(2, "RUN", "echo hi")
    key = build.cache_key("sha256:base", run)
    assert key == build.cache_key("sha256:base", Instruction(7, "RUN", "echo hi"))   # a comment moved it
    assert key != build.cache_key("sha256:other", run)                              # another parent
    assert key != build.cache_key("sha256:base", Instruction(2, "RUN", "echo ho"))  # another command
    assert key != build.cache_key("sha256:base", run, content="files")             # COPY's checksum


def stage(config=None) -> BuildStage:
    return BuildStage("key", [], {"config": config or {"Cmd": ["sh"], "Env": ["PATH=/bin"]}, "history": []})


def test_copy_checksum_follows_contents_and_modes_not_times(tmp_path):
    (tmp_path / "greeting.txt").write_text("hello\n")
    copy = Instruction(3, "COPY", "greeting.txt /greeting.txt")
    first = build.copy_checksum(tmp_path, copy, stage())
    os.utime(tmp_path / "greeting.txt", (0, 0))
    assert build.copy_checksum(tmp_path, copy, stage()) == first
    os.chmod(tmp_path / "greeting.txt", 0o600)
    assert build.copy_checksum(tmp_path, copy, stage()) != first
    (tmp_path / "greeting.txt").write_text("hullo\n")
    assert build.copy_checksum(tmp_path, Instruction(3, "COPY", "greeting.txt /greeting.txt"), stage()) != first


def test_copy_puts_files_under_dest_and_the_workdir_and_refuses_the_outside(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir/a").write_text("a")
    (tmp_path / "b").write_text("b")
    entries = build.copy_entries(tmp_path, Instruction(3, "COPY", "dir b app/"), stage({"WorkingDir": "/srv"}))
    assert [name for name, _ in entries] == ["srv", "srv/app", "srv/app/a", "srv/app/b"]
    with pytest.raises(BadInput, match="line 4: COPY failed"):
        build.copy_entries(tmp_path, Instruction(4, "COPY", "../etc/passwd /"), stage())


def test_config_instructions_change_the_config_and_add_an_empty_layer_entry():
    after = stage()
    for line in ("ENV A=1", "WORKDIR /srv", "WORKDIR app", "ENTRYPOINT [\"echo\"]"):
        keyword, argument = line.split(" ", 1)
        after = build.config_instruction(None, after, Instruction(1, keyword, argument), None, None)
    config = after.config["config"]
    assert config["Env"] == ["PATH=/bin", "A=1"] and config["WorkingDir"] == "/srv/app"
    assert config["Entrypoint"] == ["echo"] and "Cmd" not in config     # the base's CMD goes with ENTRYPOINT
    assert after.layers == [] and all(entry["empty_layer"] for entry in after.config["history"])
    assert after.config["history"][0]["created_by"] == "/bin/sh -c #(nop)  ENV A=1"
