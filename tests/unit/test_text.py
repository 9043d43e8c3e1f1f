"""Terminal-safe text: the escaping helper and every human-readable renderer that uses it."""

from __future__ import annotations

import pytest
import structlog

from expressway_certd.cmd_device import render
from expressway_certd.monitor.logging import configure_logging
from expressway_certd.monitor.text import printable, printable_values


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("CN=expe.example.com", "CN=expe.example.com"),
        ("Zürich 東京", "Zürich 東京"),  # non-ASCII text is not a control
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ("nul\x00", "nul\\x00"),
        ("bell\x07tab\tcr\rnl\n", "bell\\x07tab\\x09cr\\x0dnl\\x0a"),
        ("del\x7f c1\x9b csi\x85", "del\\x7f c1\\x9b csi\\x85"),
        ("gpj.\u202eexe", "gpj.\\u202eexe"),
        ("\u2066iso\u2069 \u200fmark \u061c", "\\u2066iso\\u2069 \\u200fmark \\u061c"),
        ("zero\u200bwidth soft\u00adhyphen", "zero\\u200bwidth soft\\xadhyphen"),  # Cf
        ("line\u2028para\u2029", "line\\u2028para\\u2029"),  # Zl, Zp
        ("private\ue000 \U000f0000", "private\\ue000 \\U000f0000"),  # Co, astral in 8 digits
        ("unassigned\u0378", "unassigned\\u0378"),  # Cn
    ],
)
def test_printable(raw: str, shown: str):
    assert printable(raw) == shown


def test_printable_keeps_newlines_when_asked():
    assert printable("line1\nline2\x1b", keep_newlines=True) == "line1\nline2\\x1b"


def test_printable_values_walks_reports():
    report = {"a": ["x\x1b", ("y\x00", 3)], "b": None, "c": {"d": "\u202e"}}
    assert printable_values(report) == {
        "a": ["x\\x1b", ("y\\x00", 3)],
        "b": None,
        "c": {"d": "\\u202e"},
    }


def test_console_logs_escape_hostile_values(capsys):
    configure_logging("info", "console")
    structlog.get_logger().info(
        "probe_ok\x1b[2J", subject="CN=evil\x1b]0;pwned\x07", sans=["DNS:a\x1b[31m"], port=443
    )
    err = capsys.readouterr().err
    assert not {c for c in err if ord(c) < 0x20 and c != "\n"}, repr(err)
    assert "CN=evil" in err and "x1b]0;pwned" in err and "DNS:a" in err


def test_json_logs_are_left_to_the_json_encoder(capsys):
    configure_logging("info", "json")
    structlog.get_logger().info("probe_ok", subject="CN=evil\x1b")
    assert '"CN=evil\\u001b"' in capsys.readouterr().err


def test_inspect_render_escapes_what_the_box_reports():
    cert = {
        "subject": "CN=evil\x1b[2J",
        "issuer": "CN=ca\u202e",
        "not_after": "2030-01-01T00:00:00+00:00",
        "sans": ["DNS:a\x00"],
        "eku": [],
        "aki": None,
        "sha256": "ab" * 32,
    }
    report = {
        "name": "box\x1b]0;x\x07",
        "role": "e",
        "version": "X15.2",
        "server_cert": cert,
        "pending_csr": {"subject": "CN=\x9bq", "sans": ["DNS:\x1b"]},
        "trusted_ca_count": 1,
        "peers": ["peer\x1b"],
        "zones": [{"name": "z\x1b", "state": "Active", "reason": "r\x07"}],
        "unsupported": [],
    }
    text = render("expe", report)
    assert not {c for c in text if ord(c) < 0x20 and c != "\n"}
    assert "\x9b" not in text and "\u202e" not in text
    assert "CN=evil\\x1b[2J" in text and "box\\x1b]0;x\\x07" in text
