"""labcore.lessons.display: tables, parsed mountinfo, folded details and trimmed JSON, as text and as HTML."""
import json

from labcore.lessons import display

# proc(5)'s example line, and one with no optional fields and a long overlay option string
MOUNTINFO = ("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
             "612 580 0:52 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/labcore/l1:/var/lib/"
             "labcore/l2,upperdir=/var/lib/labcore/u,workdir=/var/lib/labcore/w\n")


def test_a_mountinfo_line_is_read_as_proc5_describes_it():
    mount = display.parse_mountinfo_line(MOUNTINFO.splitlines()[0])
    assert mount == {"id": "36", "parent": "35", "device": "98:0", "root": "/mnt1", "mount point": "/mnt2",
                     "options": "rw,noatime", "optional": "master:1", "propagation": "slave", "fstype": "ext3",
                     "source": "/dev/root", "super options": "rw,errors=continue",
                     "fs options": "rw, errors=continue"}
    assert display.parse_mountinfo_line(MOUNTINFO.splitlines()[1])["propagation"] == "private"
    assert display.parse_mountinfo_line("1 0 0:1 / / rw shared:1 master:2 - tmpfs t rw")["propagation"] \
        == "shared, slave"


def test_mount_table_keeps_the_kernels_order_and_the_columns_asked_for():
    table = display.mount_table(MOUNTINFO, columns=("mount point", "fstype", "propagation"), title="mounts")
    assert table.rows == [("/mnt2", "ext3", "slave"), ("/", "overlay", "private")]
    assert str(table).splitlines() == ["mounts", "mount point  fstype   propagation", "/mnt2        ext3     slave",
                                       "/            overlay  private"]


def test_table_html_escapes_and_wraps_at_the_page_edge():
    html = display.Table(("name",), [("<b>",)])._repr_html_()
    assert "&lt;b&gt;" in html and "<b>" not in html.replace("<b></b>", "")
    assert html.startswith("<div style='word-wrap:break-word'>")


def test_folded_shows_the_summary_and_folds_the_details():
    folded = display.Folded("12 checks: 10 ok, 2 refused", display.Table(("check",), [("userns",)]))
    assert folded._repr_html_().startswith("<details><summary>12 checks: 10 ok, 2 refused</summary>")
    assert "<table>" in folded._repr_html_()
    assert str(folded) == "12 checks: 10 ok, 2 refused\n   check\n   userns"
    assert "plain &amp; text</pre>" in display.Folded("s", "plain & text")._repr_html_()


def test_trimmed_json_is_indented_and_says_what_it_cut():
    value = {"Id": "a" * 100, "Env": [f"V{i}=1" for i in range(10)], **{f"k{i}": i for i in range(10)}}
    text = display.trimmed_json(value, max_items=3, max_string=10)
    parsed = json.loads(text)
    assert parsed["Id"] == "aaaaaaaaaa… (90 more characters)"
    assert parsed["Env"] == ["V0=1", "V1=1", "V2=1", "… 7 more"]
    assert parsed["…"] == "9 more keys" and list(parsed)[:3] == ["Id", "Env", "k0"]
    assert text.startswith('{\n  "Id"')


def test_a_long_unbroken_value_may_break_anywhere_in_a_table_cell():
    from labcore.lessons.evidence import html_cell
    assert html_cell("sha256:" + "a" * 64).startswith("<td style='word-break:break-all'>")
    assert html_cell("a short value") == "<td><code>a short value</code></td>"


def test_an_overlays_layers_are_a_count_and_short_names():
    mount = display.parse_mountinfo_line(MOUNTINFO.splitlines()[1])
    assert mount["fs options"] == "rw, lowerdir: 2 layers (l1, l2), upperdir: u, workdir: w"
    layer = "/var/lib/labcore/images/layers/" + "b5d9775e6757" * 5 + "abcd"
    assert display.short_options(f"lowerdir={layer}") == "lowerdir: 1 layer (b5d9775e6757…)"


def test_options_table_gives_each_layer_a_row():
    table = display.options_table("lowerdir=/l/a:/l/b,upperdir=/c/upper,index=off")
    assert table.rows == [("lowerdir 1", "/l/a"), ("lowerdir 2", "/l/b"), ("upperdir", "/c/upper"), ("index", "off")]


def test_a_steps_mountinfo_becomes_a_table_and_the_lines_stay_in_its_data():
    from labcore.lessons.evidence import Step
    step = display.with_mount_table(Step("cat", "cat /proc/self/mountinfo", after={"stdout": MOUNTINFO}))
    assert step.data["mountinfo"] == MOUNTINFO.splitlines()
    assert isinstance(step.after["stdout"], display.Table) and step.after["stdout"].title == "2 mounts"
    html = step._repr_html_()
    assert "<th style='text-align:left'>fs options</th>" in html and "lowerdir: 2 layers (l1, l2)" in html
    assert "lowerdir: 2 layers" in str(step)
    refused = Step.refused("cat", "cat", "EPERM")
    assert display.with_mount_table(refused) is refused
